"""Speech recognition with CTC: decoding, the loss at its edges, corpus-level error rates
(checked against jiwer's own corpus figures), and a recogniser trained through the CLI on
generated clips of tone "words"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, keel

sf = pytest.importorskip("soundfile")
jiwer = pytest.importorskip("jiwer")

RATE = 8000
WORDS = {"a": 400.0, "b": 1500.0}  # each word is a tone


def _out(best: list[list[int]], lengths: list[int], classes: int = 4) -> torch.Tensor:
    """Model outputs whose argmax per frame is ``best``, with a frame mask of ``lengths``."""
    frames = max(len(b) for b in best)
    out = torch.zeros(len(best), frames, classes + 1)
    for i, row in enumerate(best):
        for t, c in enumerate(row):
            out[i, t, c] = 5.0
        out[i, : lengths[i], -1] = 1.0
    return out


def test_greedy_merges_repeats_drops_blanks_and_stops_at_the_clip_end():
    from torchkeel.tasks.recognise import greedy

    # alphabet " ab": 1 = space, 2 = a, 3 = b; blank 0 separates a repeated letter
    out = _out([[2, 2, 0, 2, 1, 3, 3, 3], [3, 0, 3, 2, 2, 2, 2, 2]], [8, 3])
    assert greedy(out, " ab") == ["aa b", "bb"]


def test_ctc_loss_is_finite_for_a_clip_too_short_for_its_transcript():
    from torchkeel.data.ragged import Ragged
    from torchkeel.tasks.recognise import ctc_loss

    out = torch.randn(2, 6, 5, requires_grad=True)
    mask = torch.tensor([[1.0] * 6, [1.0, 1.0, 0, 0, 0, 0]])
    full = torch.cat([out[..., :-1], mask[..., None]], dim=-1)
    y = Ragged.from_list([torch.tensor([1, 2, 3]), torch.tensor([1, 2, 1, 2])])  # 4 labels in 2 frames
    loss = ctc_loss(full, y)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(out.grad).all()


def test_error_rates_are_corpus_level_as_jiwer_computes_them():
    from torchkeel.data.bundle import DataSpec
    from torchkeel.data.ragged import Ragged
    from torchkeel.tasks.recognise import ErrorRates

    alphabet = " ab"
    spec = DataSpec("s", "audio", "speech_recognition", (2, 100), extra={"alphabet": alphabet})
    refs, hyps = ["a b a", "b", "a a b b"], ["a a", "b", "a b b b a"]
    ids = {c: i + 1 for i, c in enumerate(alphabet)}
    y = Ragged.from_list([torch.tensor([ids[c] for c in r]) for r in refs])
    best = [[x for c_prev, c in zip(" " + h, h, strict=False) for x in ((0, ids[c]) if c == c_prev else (ids[c],))]
            for h in hyps]  # fmt: skip
    acc = ErrorRates(spec, ["wer", "cer"], torch.device("cpu"))
    acc.update(_out(best, [len(b) for b in best]), y)
    got = acc.compute()
    assert got["wer"] == pytest.approx(jiwer.wer(refs, hyps))  # total errors over total reference words
    assert got["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert got["wer"] != pytest.approx(np.mean([jiwer.wer(r, h) for r, h in zip(refs, hyps, strict=True)]))


def write_tone_words(root: Path, n: int = 160, seed: int = 0) -> Path:
    """Clips of 1-4 tone words (0.15-0.25 s each, 0.08-0.2 s apart), levels 13x apart, and a
    CSV of file,transcript."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["file,transcript"]
    for i in range(n):
        words = list(rng.choice(list(WORDS), size=rng.integers(1, 5)))
        pieces = [np.zeros(int(RATE * 0.1), np.float32)]
        for w in words:
            t = np.arange(int(RATE * rng.uniform(0.15, 0.25))) / RATE
            pieces.append((np.sin(2 * np.pi * WORDS[w] * t) * np.hanning(len(t))).astype(np.float32))
            pieces.append(np.zeros(int(RATE * rng.uniform(0.08, 0.2)), np.float32))
        clip = np.concatenate(pieces) * rng.choice([0.06, 0.8]) + 0.005 * rng.standard_normal(1).astype(np.float32)
        sf.write(root / f"{i}.wav", clip.astype(np.float32), RATE, subtype="PCM_16")
        rows.append(f"{i}.wav,{' '.join(words)}")
    (root / "clips.csv").write_text("\n".join(rows) + "\n")
    return root / "clips.csv"


@pytest.fixture(scope="module")
def ctc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("ctc")
    csv = write_tone_words(cwd / "words")
    small = ["--set", "model.conv=8", "--set", "model.hidden=48", "--set", "model.layers=1"]
    keel("train", "--data", "audio_transcripts", "--set", f"data.path={csv}", *small, "--set", "train.batch_size=8",
         "--epochs", "30", "--seed", "0", cwd=cwd, check=True, timeout=600)  # fmt: skip
    return (cwd / "runs" / "latest").resolve()


def test_a_ctc_recogniser_learns_tone_words_and_transcribes_new_clips(ctc_run: Path, tmp_path: Path):
    summary = json.loads((ctc_run / "summary.json").read_text())
    assert summary["test"]["wer"] <= 0.2 and summary["test"]["cer"] <= 0.15, summary["test"]
    data = json.loads((ctc_run / "data.json").read_text())
    assert data["task"] == "speech_recognition" and data["extra"]["alphabet"] == " ab"
    assert "ctc_gru" in (ctc_run / "config.yaml").read_text()  # the speech recipe
    report = (ctc_run / "report.html").read_text()
    assert 'id="transcripts"' in report and 'id="curves"' in report
    again = json.loads(keel("eval", str(ctc_run), "--json", cwd=tmp_path, check=True).stdout)
    assert again["wer"] == pytest.approx(summary["test"]["wer"])
    csv = write_tone_words(tmp_path / "new", n=4, seed=7)
    expected = [line.split(",")[1] for line in csv.read_text().splitlines()[1:]]
    files = [str(tmp_path / "new" / f"{i}.wav") for i in range(4)]
    proc = keel("predict", str(ctc_run), *files, "--json", cwd=tmp_path, check=True)
    got = [json.loads(line)["transcript"] for line in proc.stdout.splitlines()]
    assert jiwer.wer(expected, got) <= 0.25, (expected, got)


def test_a_ctc_recogniser_is_served_and_its_page_shows_the_transcript(ctc_run: Path, tmp_path: Path):
    import httpx
    from browser import CHROMIUM, CHROMIUM_ARGS, skip_without_chromium
    from serving import running_server

    csv = write_tone_words(tmp_path / "new", n=3, seed=8)
    expected = [line.split(",")[1] for line in csv.read_text().splitlines()[1:]]
    files = [tmp_path / "new" / f"{i}.wav" for i in range(3)]
    with running_server(ctc_run, log_dir=tmp_path) as url:
        sent = [("file", (f.name, f.read_bytes())) for f in files]
        got = httpx.post(f"{url}/predict", files=sent, timeout=60)
        assert got.status_code == 200, got.text
        heard = [p["transcript"] for p in got.json()["predictions"]]
        assert jiwer.wer(expected, heard) <= 0.34, (expected, heard)
        bad = httpx.post(f"{url}/predict", files={"file": ("x.wav", b"RIFF junk")}, timeout=30)
        assert bad.status_code == 400 and "not a readable" in bad.json()["error"]
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        skip_without_chromium()
        sync_api = pytest.importorskip("playwright.sync_api")
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            problems: list[str] = []
            page = browser.new_page()
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(url + "/")
            page.wait_for_selector("#audio-input:not([hidden])")
            page.set_input_files("#sound-file", str(files[0]))
            page.wait_for_selector("#bars .transcript")
            assert page.locator("#bars .transcript").inner_text() == heard[0]
            browser.close()
        assert problems == []


@pytest.mark.parametrize("band_means", [False, True])
def test_a_clip_gets_the_same_ctc_outputs_alone_and_beside_a_longer_one(band_means: bool):
    from torchkeel.data.audio import pad_clips
    from torchkeel.data.bundle import DataSpec
    from torchkeel.models import build

    spec = DataSpec("s", "audio", "speech_recognition", (2, 8000), extra={"sample_rate": RATE, "alphabet": " ab"})
    torch.manual_seed(0)
    model = build({"name": "ctc_gru", "conv": 8, "hidden": 16, "band_means": band_means}, spec).eval()
    rng = np.random.default_rng(0)
    clip, longer = (rng.standard_normal(n).astype(np.float32) * 0.3 for n in (8040, 16000))
    with torch.no_grad():
        alone = model(pad_clips([clip], len(clip)))[0]
        company = model(pad_clips([clip, longer], len(longer)))[0]
    frames = int(alone[:, -1].sum())
    assert int(company[:, -1].sum()) == frames
    torch.testing.assert_close(company[:frames], alone[:frames], atol=1e-5, rtol=1e-5)


def test_the_recogniser_counts_its_output_frames_as_its_mask_does():
    from torchkeel.data.audio import pad_clips
    from torchkeel.data.bundle import DataSpec
    from torchkeel.models import build

    spec = DataSpec("s", "audio", "speech_recognition", (2, 4000), extra={"sample_rate": RATE, "alphabet": " ab"})
    model = build({"name": "ctc_gru", "conv": 4, "hidden": 8, "layers": 1}, spec).eval()
    lengths = [1, 79, 80, 81, 321, 3999]
    with torch.no_grad():
        out = model(pad_clips([np.ones(n, np.float32) for n in lengths], 4000))
    assert model.output_frames(torch.tensor(lengths)).tolist() == out[..., -1].sum(1).long().tolist()
    assert model.frame_seconds == pytest.approx(0.04)


def test_clips_too_short_for_their_transcripts_are_left_out_and_named(tmp_path: Path):
    csv = write_tone_words(tmp_path / "words", n=24)
    # 0.1 s make 3 frames of 40 ms: "a b a b a" needs 9
    sf.write(tmp_path / "words" / "short.wav", np.zeros(800, np.float32), RATE)
    rows = csv.read_text().splitlines()[1:] + ["short.wav,a b a b a"]
    parts = ["test"] * 4 + ["val"] * 4 + ["train"] * (len(rows) - 8)
    csv.write_text("file,transcript,split\n" + "".join(f"{r},{p}\n" for r, p in zip(rows, parts, strict=True)))
    small = ["--set", "model.conv=4", "--set", "model.hidden=8", "--set", "model.layers=1", "--epochs", "1"]
    proc = keel("train", "--data", "audio_transcripts", "--set", f"data.path={csv}", *small,
                "--set", "eval.report=false", "--seed", "1", cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if "too short" in ln)
    assert "1 of 17 training clips" in line and "short.wav" in line and "needs 9" in line, line
    only = tmp_path / "only.csv"
    only.write_text("file,transcript\n" + "".join("words/short.wav,a b a b a\n" for _ in range(6)))
    proc = keel("train", "--data", "audio_transcripts", "--set", f"data.path={only}", *small, cwd=tmp_path)
    assert_one_line_error(proc, "every training clip is too short", "short.wav")


def test_a_test_character_unseen_in_training_stays_in_the_reference_as_unknown(tmp_path: Path):
    from torchkeel.config_data import DataConfig
    from torchkeel.data import load
    from torchkeel.tasks.recognise import references

    csv = write_tone_words(tmp_path, n=10)
    rows = csv.read_text().splitlines()[1:]
    rows[0] = rows[0].split(",")[0] + ",a c"  # "c" is in no training transcript
    parts = ["test"] + ["val"] + ["train"] * 8
    csv.write_text("file,transcript,split\n" + "".join(f"{r},{p}\n" for r, p in zip(rows, parts, strict=True)))
    bundle = load(DataConfig(name="audio_transcripts", path=str(csv)), seed=0)
    alphabet = bundle.spec.extra["alphabet"]
    assert alphabet == " ab\u2047"
    assert references(bundle.test.y, alphabet) == ["a \u2047"]  # counted as an error, not dropped


@pytest.mark.parametrize("what", ["sounds", "transcripts"])
def test_audio_runs_resume_mid_training_bit_identically(what: str, tmp_path: Path):
    """SpecAugment and VTLP draw from torch's generator every batch: a resumed run must draw
    the same masks and warps (a sound classifier, and a CTC recogniser with ragged targets)."""
    import torchkeel as keel
    from torchkeel.train import checkpoint as ckpt

    if what == "sounds":
        from test_audio import write_sound_folder

        data = keel.data.load({"name": "audio_folder", "root": str(write_sound_folder(tmp_path / "s", 8))}, seed=0)
        model_cfg = {"name": "logmel_cnn", "channels": [4, 8]}
    else:
        data = keel.data.load({"name": "audio_transcripts", "path": str(write_tone_words(tmp_path / "w", 24))}, seed=0)
        model_cfg = {"name": "ctc_gru", "conv": 4, "hidden": 8, "layers": 1}
    every_epoch = {"every_epochs": 1, "min_seconds": 0, "keep": 3}
    options = {"epochs": 3, "seed": 2, "batch_size": 4, "checkpoint": every_epoch, "progress": False}
    torch.manual_seed(0)
    full = keel.fit(keel.models.build(model_cfg, data.spec), data, run_dir=tmp_path / "run", **options)
    first = ckpt.list_checkpoints(tmp_path / "run" / "checkpoint")[0]
    torch.manual_seed(99)
    resumed = keel.fit(keel.models.build(model_cfg, data.spec), data, resume=first, **options)
    timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in run.history] for run in (full, resumed)]
    assert timeless[0] == timeless[1] and len(timeless[0]) == 3
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_clips_longer_than_max_seconds_are_left_out_not_cut_from_their_words(tmp_path: Path, capsys):
    from torchkeel.config_data import DataConfig
    from torchkeel.data import load
    from torchkeel.errors import DataError
    from torchkeel.tasks.recognise import references

    csv = write_tone_words(tmp_path, n=30)
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    seconds = [sf.info(str(tmp_path / f)).duration for f, _ in rows]
    bundle = load(DataConfig(name="audio_transcripts", path=str(csv), audio={"max_seconds": 1.0}), seed=0)
    long = sum(s > 1.0 for s in seconds)
    assert 0 < long < 30 and len(bundle.train) + len(bundle.val) + len(bundle.test) == 30 - long
    assert f"{long} of 30 clips are longer than data.audio.max_seconds (1 s)" in capsys.readouterr().err
    kept = {t for (f, t), s in zip(rows, seconds, strict=True) if s <= 1.0}
    assert set(references(bundle.test.y, bundle.spec.extra["alphabet"])) <= kept  # transcripts still match
    assert int(bundle.train.x[:, 1].sum(-1).max()) <= RATE  # nothing was cut
    with pytest.raises(DataError, match="every training clip is longer"):
        load(DataConfig(name="audio_transcripts", path=str(csv), audio={"max_seconds": 0.1}), seed=0)


def test_the_masked_bidirectional_gru_equals_a_packed_one():
    from torchkeel.models.audio import masked_bigru

    torch.manual_seed(0)
    rnn = torch.nn.GRU(6, 5, 2, batch_first=True, bidirectional=True).eval()
    h = torch.randn(3, 9, 6)
    lengths = torch.tensor([9, 4, 1])
    mask = (torch.arange(9)[None] < lengths[:, None]).float()
    packed = torch.nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
    want, _ = torch.nn.utils.rnn.pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=9)
    with torch.no_grad():
        got = masked_bigru(rnn, h * mask[..., None] + 7.0 * (1 - mask[..., None]), mask)  # junk in the padding
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_a_ctc_recogniser_exports_to_onnx_with_its_frame_mask(ctc_run: Path, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    proc = keel("export", str(ctc_run), "--out", str(tmp_path / "out"), cwd=tmp_path, check=True, timeout=600)
    assert (tmp_path / "out" / "model.onnx").is_file(), proc.stdout
    meta = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert "frame mask" in json.dumps(meta) and meta["models"]["model.onnx"]["verified_on"] == "the test split"
    # the exported graph (features included) transcribes recordings as PyTorch does
    import onnxruntime

    from torchkeel.data.audio import pad_clips, read_audio
    from torchkeel.tasks.recognise import greedy

    write_tone_words(tmp_path / "new", n=4, seed=9)
    clips = [read_audio(tmp_path / "new" / f"{i}.wav", RATE)[0] for i in range(4)]
    length = meta["spec"]["input_shape"][1]
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    out = session.run(None, {session.get_inputs()[0].name: pad_clips(clips, length).numpy()})[0]
    heard = greedy(torch.from_numpy(out), meta["spec"]["extra"]["alphabet"])
    files = [str(tmp_path / "new" / f"{i}.wav") for i in range(4)]
    proc = keel("predict", str(ctc_run), *files, "--json", cwd=tmp_path, check=True)
    assert heard == [json.loads(line)["transcript"] for line in proc.stdout.splitlines()]
    # int8: compared on the test split by its word error rate
    out8 = tmp_path / "int8"
    proc = keel("export", str(ctc_run), "--out", str(out8), "--quantize", "dynamic", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "wer" in proc.stdout and (out8 / "model.int8.onnx").is_file(), proc.stdout


FSDD = Path(__file__).resolve().parents[1] / "data" / "fsdd" / "recordings"


def test_digit_strings_join_2_to_7_recordings_of_one_speaker_with_noise_between(tmp_path: Path):
    """A folder named as the FSDD's (digit_speaker_take.wav) of tones, one pitch per digit."""
    from torchkeel.config_data import DataConfig
    from torchkeel.data import load

    rng = np.random.default_rng(0)
    for speaker, level in (("ann", 0.05), ("bob", 0.6)):
        for digit in range(10):
            for take in range(7):
                clip = np.concatenate([np.zeros(400), tone_burst(300 + 150 * digit, 0.2, level, rng), np.zeros(400)])
                sf.write(tmp_path / f"{digit}_{speaker}_{take}.wav", clip.astype(np.float32), RATE)
    cfg = {"name": "fsdd_digits", "root": str(tmp_path), "val_fraction": 0.1}
    bundle = load(DataConfig(**cfg, audio={"strings": 80}), seed=0)
    assert len(bundle.test.x) == 20 and len(bundle.train.x) + len(bundle.val.x) == 80
    digits = [len(t.tolist()) // 2 + 1 for t in bundle.test.y.items()]  # "3 1 4": digits and spaces
    assert min(digits) >= 2 and max(digits) <= 7
    x = bundle.train.x[0]
    lead = x[0, : int(RATE * 0.05)]
    speech = x[0, : int(x[1].sum())]
    assert 0 < float(lead.square().mean().sqrt()) < 0.1 * float(speech.square().mean().sqrt())  # quiet, not silent
    again = load(DataConfig(**cfg, audio={"strings": 80}), seed=3)  # the strings do not depend on the run's seed
    assert torch.equal(again.test.x, bundle.test.x)
    held = load(DataConfig(**cfg, audio={"strings": 80, "test_speakers": ["bob"]}), seed=0)
    levels = held.test.x[:, 0].abs().amax(1)
    assert float(levels.min()) > 0.3  # only bob's loud voice in the test strings


def tone_burst(freq: float, seconds: float, level: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return level * np.sin(2 * np.pi * freq * t) * np.hanning(len(t)) + 0.001 * rng.standard_normal(len(t))


@pytest.mark.slow
@pytest.mark.skipif(not FSDD.is_dir(), reason="data/fsdd/recordings is not there")
def test_fsdd_digit_strings_have_the_official_split_sizes_and_2_to_7_digits():
    from torchkeel.config_data import DataConfig
    from torchkeel.data import load

    bundle = load(DataConfig(name="fsdd_digits", root=str(FSDD), audio={"strings": 40}), seed=0)
    assert bundle.spec.task == "speech_recognition" and bundle.spec.extra["alphabet"] == " 0123456789"
    assert len(bundle.test.x) == 10 and len(bundle.train.x) + len(bundle.val.x) == 40
    words = [len(t.tolist()) for t in bundle.test.y.items()]  # 2-7 digits with spaces between
    assert all(3 <= n <= 13 and n % 2 == 1 for n in words)


def test_trimming_keeps_the_loud_part():
    from torchkeel.data.transcripts import _trim

    clip = np.zeros(8000, np.float32)
    clip[3000:4000] = np.sin(np.arange(1000) / 3.0)
    trimmed = _trim(clip)
    assert 1000 <= len(trimmed) <= 1160 and np.abs(trimmed[:80]).max() > 0.1


@pytest.mark.slow
@pytest.mark.skipif(not FSDD.is_dir(), reason="data/fsdd/recordings is not there")
def test_held_out_speakers_are_the_test_set_and_no_other():
    from torchkeel.config_data import DataConfig
    from torchkeel.data import load
    from torchkeel.errors import DataError

    bundle = load(DataConfig(name="fsdd", root=str(FSDD), audio={"test_speakers": ["theo"]}), seed=0)
    assert len(bundle.test.x) == 500 and len(bundle.train.x) + len(bundle.val.x) == 2500
    with pytest.raises(DataError, match="no speaker 'bob'"):
        load(DataConfig(name="fsdd_digits", root=str(FSDD), audio={"test_speakers": ["bob"]}), seed=0)


YESNO = Path(__file__).resolve().parents[1] / "data" / "yesno" / "waves_yesno"


@pytest.mark.skipif(not YESNO.is_dir(), reason="data/yesno/waves_yesno is not there")
def test_yesno_has_its_usual_split_and_eight_words_a_clip():
    from torchkeel.config_data import DataConfig
    from torchkeel.data import load
    from torchkeel.tasks.recognise import references

    bundle = load(DataConfig(name="yesno", root=str(YESNO)), seed=0)
    assert len(bundle.test.x) == 30 and len(bundle.train.x) + len(bundle.val.x) == 30
    assert bundle.spec.extra["alphabet"] == " enosy" and bundle.spec.extra["sample_rate"] == 8000
    refs = references(bundle.test.y, bundle.spec.extra["alphabet"])
    assert all(len(r.split()) == 8 and set(r.split()) <= {"yes", "no"} for r in refs)
    names = sorted(p.name for p in YESNO.glob("*.wav"))
    assert refs[0] == " ".join("yes" if b == "1" else "no" for b in names[1][:-4].split("_"))  # odd positions test
