"""Sound files: reading (WAV/FLAC/OGG, stereo, other rates), the log-mel front end, and a
log-mel CNN trained, evaluated and used for prediction through the CLI on generated clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, keel

sf = pytest.importorskip("soundfile")

CLASSES = {"low": 220.0, "mid": 660.0, "high": 1800.0}  # the tone's fundamental per class
RATE = 8000


def tone(freq: float, seconds: float, rate: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """A tone with two harmonics and a little noise, faded in and out."""
    t = np.arange(int(seconds * rate)) / rate
    wave = np.sin(2 * np.pi * freq * t) + 0.4 * np.sin(4 * np.pi * freq * t) + 0.2 * rng.standard_normal(len(t))
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (level * wave * fade / 1.6).astype(np.float32)


def write_sound_folder(root: Path, per_class: int = 24, seed: int = 0) -> Path:
    """Class folders of clips 0.2-0.9 s long at levels 13x apart; most are 8 kHz mono WAV, some
    16 kHz stereo WAV, some FLAC and OGG."""
    rng = np.random.default_rng(seed)
    for name, freq in CLASSES.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            level = float(rng.choice([0.06, 0.8]))
            rate = 16000 if i % 6 == 1 else RATE
            clip = tone(freq * rng.uniform(0.93, 1.07), rng.uniform(0.2, 0.9), rate, level, rng)
            if i % 6 == 1:
                sf.write(root / name / f"{i}.wav", np.stack([clip, clip * 0.5], axis=1), rate, subtype="PCM_16")
            elif i % 6 == 2:
                sf.write(root / name / f"{i}.flac", clip, rate)
            elif i % 6 == 3:
                sf.write(root / name / f"{i}.ogg", clip, rate, format="OGG", subtype="VORBIS")
            else:
                sf.write(root / name / f"{i}.wav", clip, rate, subtype="PCM_16")
    return root


def test_reading_mixes_down_resamples_and_keeps_lengths(tmp_path: Path):
    from torchkeel.data.audio import pad_clips, read_audio

    rng = np.random.default_rng(0)
    clip = tone(440.0, 0.5, 16000, 0.5, rng)
    sf.write(tmp_path / "stereo.wav", np.stack([clip, -clip], axis=1), 16000, subtype="FLOAT")
    mono, rate = read_audio(tmp_path / "stereo.wav", None)
    assert rate == 16000 and np.abs(mono).max() < 1e-6  # the mean of opposite channels
    sf.write(tmp_path / "a.wav", clip, 16000, subtype="PCM_24")
    down, rate = read_audio(tmp_path / "a.wav", 8000)
    assert rate == 8000 and len(down) == 4000
    # the tone survives resampling: its spectrum still peaks at 440 Hz
    peak = np.argmax(np.abs(np.fft.rfft(down))) * 8000 / len(down)
    assert abs(peak - 440.0) < 4
    x = pad_clips([down, down[:1000]], 3000)
    assert x.shape == (2, 2, 3000) and x[1, 1].sum() == 1000 and x[0, 1].sum() == 3000
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wave file")
    from torchkeel.errors import DataError

    with pytest.raises(DataError, match="bad.wav: not a readable"):
        read_audio(tmp_path / "bad.wav", 8000)


def test_mel_filterbank_is_htk_triangles_and_matches_librosa_when_installed():
    from torchkeel.models.logmel import hz_to_mel, mel_filterbank

    fb = mel_filterbank(40, 256, 8000)
    assert fb.shape == (40, 129) and fb.min() >= 0 and fb.max() <= 1
    assert (fb.max(1).values > 0.5).all()  # every filter has a bin near its peak
    assert float(hz_to_mel(torch.tensor(1000.0))) == pytest.approx(1000.0, abs=0.5)  # HTK: 1 kHz is ~1000 mel
    librosa = pytest.importorskip("librosa")
    reference = librosa.filters.mel(sr=8000, n_fft=256, n_mels=40, htk=True, norm=None)
    np.testing.assert_allclose(fb.numpy(), reference, atol=1e-5)


def test_a_run_saved_before_band_means_and_warp_rebuilds_as_it_was_trained():
    from torchkeel.data.bundle import DataSpec
    from torchkeel.models import rebuild, saved_options

    spec = DataSpec("s", "audio", "classification", (2, 8000), classes=list("ab"), extra={"sample_rate": RATE})
    old = {"name": "logmel_cnn", "channels": [8, 16], "dropout": 0.2, "n_mels": 40, "spec_augment": True}
    model = rebuild(saved_options(old), spec)  # as load_model reads a model.json
    assert model.features[0][0].weight.shape[1] == 1 and model.frontend.warp == 0.0
    assert rebuild(old, spec).features[0][0].weight.shape[1] == 2  # today's defaults: two planes
    assert saved_options({**old, "band_means": True})["band_means"] is True  # what a run stored wins


def test_vtlp_scales_frequencies_below_the_knee_and_keeps_zero_and_nyquist():
    from torchkeel.models.logmel import vtlp

    freqs = torch.linspace(0, 4000, 81).expand(3, -1)
    warped = vtlp(freqs, torch.tensor([0.9, 1.0, 1.1]), 4000.0)
    torch.testing.assert_close(warped[1], freqs[1])
    assert torch.all(warped[:, 0] == 0) and torch.allclose(warped[:, -1], torch.tensor(4000.0))
    assert torch.all(warped[:, 1:] > warped[:, :-1])  # still increasing: no filter folds over
    assert float(warped[0, 20]) == pytest.approx(900.0) and float(warped[2, 20]) == pytest.approx(1100.0)


def test_the_front_end_equals_a_numpy_stft_log_mel_and_normalisation():
    """Frames centred on zero padding, a periodic Hann window centred in the FFT size, the
    power spectrum through the filterbank, log with a floor 80 dB under the peak, and the
    clip's mean and std taken over the frames inside it."""
    from torchkeel.data.audio import pad_clips
    from torchkeel.models.logmel import LogMel, mel_filterbank

    rng = np.random.default_rng(4)
    clip = tone(700.0, 0.33, RATE, 0.5, rng).astype(np.float64)
    front = LogMel(RATE, n_mels=40, spec_augment=False).eval()
    win, hop, n_fft = 200, 80, 256
    assert (front.win, front.hop, front.n_fft) == (win, hop, n_fft)
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    padded = np.pad(clip, n_fft // 2)
    frames = 1 + len(clip) // hop
    spec = np.stack([np.fft.rfft(padded[t * hop : t * hop + n_fft] * window) for t in range(frames)], axis=1)
    power = mel_filterbank(40, n_fft, RATE).double().numpy() @ np.abs(spec) ** 2
    logmel = np.log(power + power.max() * 1e-8 + 1e-12)
    inside = -(-len(clip) // hop)  # frames that start inside the clip
    kept = logmel[:, :inside]
    want = (kept - kept.mean()) / np.sqrt(kept.var() + 1e-5)
    with torch.no_grad():
        got, valid = front(pad_clips([clip.astype(np.float32)], len(clip)))
    assert int(valid.sum()) == inside
    np.testing.assert_allclose(got[0, :, :inside].numpy(), want, atol=2e-3)


def test_the_front_end_ignores_gain_padding_and_batch_company():
    from torchkeel.data.audio import pad_clips
    from torchkeel.models.logmel import LogMel

    rng = np.random.default_rng(1)
    clip = tone(500.0, 0.4, RATE, 0.5, rng)
    other = tone(900.0, 0.9, RATE, 0.5, rng)
    front = LogMel(RATE, spec_augment=False).eval()
    alone, valid_alone = front(pad_clips([clip], len(clip)))
    quiet, _ = front(pad_clips([clip * 0.05], len(clip)))
    together, valid = front(pad_clips([clip, other], len(other)))
    frames = int(valid_alone.sum())
    assert int(valid[0].sum()) == frames and int(valid[1].sum()) > frames
    torch.testing.assert_close(together[0, :, :frames], alone[0, :, :frames], atol=1e-4, rtol=1e-4)
    assert together[0, :, frames:].abs().max() == 0  # frames past the clip's end are empty
    torch.testing.assert_close(quiet, alone, atol=2e-2, rtol=0)  # 26 dB quieter: the same features


@pytest.mark.parametrize(
    "model_cfg",
    [
        {"name": "logmel_cnn", "channels": [8, 16, 16]},
        {"name": "logmel_cnn", "channels": [8, 16], "band_means": True},
        {"name": "m5", "channels": [8, 8, 16]},
    ],
)
def test_a_clip_gets_the_same_logits_alone_in_company_and_padded(model_cfg):
    from torchkeel.data.audio import pad_clips
    from torchkeel.data.bundle import DataSpec
    from torchkeel.models import build

    spec = DataSpec("s", "audio", "classification", (2, 8000), classes=list("abc"), extra={"sample_rate": RATE})
    torch.manual_seed(0)
    model = build(model_cfg, spec).eval()
    rng = np.random.default_rng(3)
    clip, longer = tone(500.0, 0.37, RATE, 0.5, rng), tone(900.0, 1.0, RATE, 0.5, rng)
    with torch.no_grad():
        alone = model(pad_clips([clip], len(clip)))[0]
        company = model(pad_clips([clip, longer], len(longer)))[0]
        quiet = model(pad_clips([clip * 0.05], len(clip)))[0]
        if hasattr(model, "frontend"):
            feats, valid = model.frontend(pad_clips([clip, longer], len(longer)))
            padded = model.classify(feats[:1], valid[:1])[0]  # alone, with the padding kept (as under export)
            torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(company, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(quiet, alone, atol=1e-3, rtol=1e-3)  # 26 dB quieter


def test_spec_augment_masks_bands_and_spans_and_is_seeded():
    from torchkeel.data.audio import pad_clips
    from torchkeel.models.logmel import LogMel

    clip = tone(500.0, 0.8, RATE, 0.5, np.random.default_rng(2))
    front = LogMel(RATE, freq_width=8, time_width=0.2).train()
    x = pad_clips([clip] * 4, len(clip))
    torch.manual_seed(0)
    a, _ = front(x)
    torch.manual_seed(0)
    b, _ = front(x)
    torch.testing.assert_close(a, b)
    clean, _ = front.eval()(x)
    zeroed = (a == 0) & (clean != 0)
    assert zeroed.any(), "SpecAugment masked nothing"
    assert not torch.equal(a[0], a[1])  # each clip draws its own masks


@pytest.fixture(scope="module")
def sound_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("sounds")
    write_sound_folder(cwd / "sounds")
    args = ["--set", f"data.root={cwd / 'sounds'}", "--set", "model.channels=[8,16]", "--set", "train.batch_size=8"]
    keel("train", "--data", "audio_folder", *args, "--epochs", "25", "--seed", "0", cwd=cwd, check=True, timeout=300)
    return (cwd / "runs" / "latest").resolve()


def test_audio_folder_trains_evaluates_and_predicts(sound_run: Path, tmp_path: Path):
    summary = json.loads((sound_run / "summary.json").read_text())
    assert summary["test"]["accuracy"] >= 0.9, summary["test"]
    data = json.loads((sound_run / "data.json").read_text())
    assert data["kind"] == "audio" and data["extra"]["sample_rate"] == RATE and data["classes"] == sorted(CLASSES)
    config = (sound_run / "config.yaml").read_text()
    assert "logmel_cnn" in config  # the audio recipe, not the image default
    report = (sound_run / "report.html").read_text()
    assert 'id="spectrograms"' in report and 'id="confusion"' in report
    again = json.loads(keel("eval", str(sound_run), "--json", cwd=tmp_path, check=True).stdout)
    assert again["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    # new clips, one at 22.05 kHz stereo and far longer than any training clip
    rng = np.random.default_rng(9)
    sf.write(tmp_path / "hi.wav", tone(1800.0, 0.5, RATE, 0.3, rng), RATE)
    long = tone(220.0, 3.0, 22050, 0.9, rng)
    sf.write(tmp_path / "lo.ogg", np.stack([long, long], axis=1), 22050, format="OGG", subtype="VORBIS")
    proc = keel("predict", str(sound_run), str(tmp_path / "hi.wav"), str(tmp_path / "lo.ogg"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["top"][0]["class"] for r in results] == ["high", "low"]
    # ONNX with the feature extraction inside, checked against PyTorch on the test clips
    export = keel("export", str(sound_run), "--out", str(tmp_path / "onnx"), cwd=tmp_path)
    assert export.returncode == 0 and "verified with onnxruntime" in export.stdout, export.stderr
    (tmp_path / "noise.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    assert_one_line_error(keel("predict", str(sound_run), str(tmp_path / "noise.wav"), cwd=tmp_path), "noise.wav")


def test_bad_sound_data_is_one_line(tmp_path: Path):
    (tmp_path / "one" / "a").mkdir(parents=True)
    sf.write(tmp_path / "one" / "a" / "x.wav", np.zeros(800, np.float32), RATE)
    assert_one_line_error(keel("train", "--data", "audio_folder", "--set", "data.root=one", cwd=tmp_path), "class")
    assert_one_line_error(keel("train", "--data", "audio_folder", cwd=tmp_path), "data.root")
    proc = keel("train", "--data", "digits", "--set", "data.audio.max_seconds=2", cwd=tmp_path)
    assert_one_line_error(proc, "data.audio")


def test_odd_recordings_are_read_or_refused_in_one_line(tmp_path: Path):
    """8 channels at 96 kHz, clipped float samples, a long file, no samples, no channels."""
    import struct

    from torchkeel.data.audio import read_audio
    from torchkeel.errors import DataError

    rng = np.random.default_rng(3)
    eight = np.stack([tone(440.0, 0.5, 96000, 0.4, rng)] * 8, axis=1)
    sf.write(tmp_path / "eight.flac", eight, 96000)
    clip, rate = read_audio(tmp_path / "eight.flac", 8000)
    assert rate == 8000 and clip.shape == (4000,)
    assert abs(np.argmax(np.abs(np.fft.rfft(clip))) * 8000 / len(clip) - 440.0) < 4
    sf.write(tmp_path / "clipped.wav", np.clip(3.0 * tone(300.0, 0.3, RATE, 1.0, rng), -1, 1), RATE, subtype="FLOAT")
    assert np.abs(read_audio(tmp_path / "clipped.wav", RATE)[0]).max() == pytest.approx(1.0)
    sf.write(tmp_path / "long.wav", np.zeros(RATE * 60, np.float32), RATE, subtype="PCM_16")
    assert len(read_audio(tmp_path / "long.wav", RATE, max_seconds=2)[0]) == 2 * RATE + 1  # the rest is not read
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), RATE)
    with pytest.raises(DataError, match="empty.wav: the file holds no samples"):
        read_audio(tmp_path / "empty.wav", RATE)
    # a PCM header that says 0 channels
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 0, RATE, 0, 0, 16)
    (tmp_path / "none.wav").write_bytes(b"RIFF" + struct.pack("<I", 36) + b"WAVE" + fmt + b"data" + b"\0" * 4)
    with pytest.raises(DataError, match="none.wav: "):
        read_audio(tmp_path / "none.wav", RATE)
    # on the command line: the folder names the bad file, exit 2
    for label in ("a", "b"):
        (tmp_path / "set" / label).mkdir(parents=True)
        for i in range(3):
            sf.write(
                tmp_path / "set" / label / f"{i}.wav", tone(300.0 + 900 * (label == "b"), 0.3, RATE, 0.3, rng), RATE
            )
    (tmp_path / "set" / "b" / "bad.wav").write_bytes(b"not a sound")
    proc = keel("train", "--data", "audio_folder", "--set", "data.root=set", cwd=tmp_path)
    assert_one_line_error(proc, "bad.wav", "not a readable")


FSDD = Path(__file__).resolve().parents[1] / "data" / "fsdd" / "recordings"


@pytest.mark.slow
@pytest.mark.skipif(not FSDD.is_dir(), reason="data/fsdd/recordings is not there")
def test_fsdd_official_split_loads(tmp_path: Path):
    from torchkeel.config_data import DataConfig
    from torchkeel.data import load

    bundle = load(DataConfig(name="fsdd", root=str(FSDD)), seed=0)
    assert len(bundle.test.x) == 300 and len(bundle.train.x) + len(bundle.val.x) == 2700
    assert len(bundle.val.x) == 300  # data.val_fraction (0.1) of all 3,000 clips, as a split column draws it
    assert bundle.spec.extra["sample_rate"] == 8000 and bundle.spec.classes == [str(d) for d in range(10)]


def test_a_csv_of_files_keeps_the_splits_it_gives(tmp_path: Path):
    from torchkeel.config_data import DataConfig
    from torchkeel.data import load

    write_sound_folder(tmp_path / "sounds", per_class=10)
    files = sorted((tmp_path / "sounds").rglob("*.*"))
    # a "speaker" per file index: index 0-1 is the test speaker, the rest train (val cut from it)
    rows = ["file,label,split"] + [
        f"sounds/{f.parent.name}/{f.name},{f.parent.name},{'test' if int(f.stem) < 2 else 'train'}" for f in files
    ]
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    bundle = load(DataConfig(name="audio_folder", path=str(tmp_path / "clips.csv"), val_fraction=0.2), seed=0)
    assert len(bundle.test.x) == 6 and len(bundle.val.x) == 6 and len(bundle.train.x) == 18
    assert sorted(bundle.test.y.tolist()) == [0, 0, 1, 1, 2, 2]
    (tmp_path / "bad.csv").write_text("file,label,split\nsounds/low/0.wav,low,holdout\n")
    from torchkeel.errors import DataError

    with pytest.raises(DataError, match="'holdout'"):
        load(DataConfig(name="audio_folder", path=str(tmp_path / "bad.csv")), seed=0)


def test_sound_model_served_and_recorded_in_the_page(sound_run: Path, tmp_path: Path):
    import httpx
    from browser import CHROMIUM, CHROMIUM_ARGS, skip_without_chromium
    from serving import running_server

    rng = np.random.default_rng(5)
    sf.write(tmp_path / "hi.wav", tone(1800.0, 0.5, RATE, 0.3, rng), RATE)
    sf.write(tmp_path / "lo.flac", tone(220.0, 0.6, 16000, 0.05, rng), 16000)
    with running_server(sound_run, log_dir=tmp_path) as url:
        files = [
            ("file", ("hi.wav", (tmp_path / "hi.wav").read_bytes())),
            ("file", ("lo.flac", (tmp_path / "lo.flac").read_bytes())),
        ]
        got = httpx.post(f"{url}/predict", files=files, timeout=60)
        assert got.status_code == 200, got.text
        assert [p["top"][0]["class"] for p in got.json()["predictions"]] == ["high", "low"]
        raw = httpx.post(
            f"{url}/predict", content=(tmp_path / "hi.wav").read_bytes(), headers={"content-type": "audio/wav"}
        )
        assert raw.json()["predictions"][0]["top"][0]["class"] == "high"
        for body, status, words in ((b"", 400, "empty"), (b"RIFF junk", 400, "not a readable")):
            bad = httpx.post(f"{url}/predict", files={"file": ("x.wav", body)}, timeout=30)
            assert bad.status_code == status and words in bad.json()["error"], bad.text
        assert httpx.post(f"{url}/predict", json={"text": "x"}, timeout=30).status_code == 415
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # still serving
        skip_without_chromium()
        sync_api = pytest.importorskip("playwright.sync_api")
        # Chromium's fake microphone plays a beep; the fake UI grants the permission
        args = [*CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
            problems: list[str] = []
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(url + "/")
            page.wait_for_selector("#audio-input:not([hidden])")
            page.set_input_files("#sound-file", str(tmp_path / "hi.wav"))
            page.wait_for_selector("#bars .label")
            assert page.locator("#bars .label").first.inner_text() == "high"
            page.click("#record")
            page.wait_for_function("document.getElementById('record').textContent.startsWith('Stop')")
            page.wait_for_timeout(1200)
            page.evaluate("document.getElementById('bars').replaceChildren()")
            page.click("#record")
            page.wait_for_selector("#bars .label", timeout=30000)
            assert page.locator("#error").inner_text() == ""
            assert not page.locator("#playback").is_hidden()
            browser.close()
        assert problems == []


def test_m5_learns_from_raw_waveforms(tmp_path: Path):
    write_sound_folder(tmp_path / "sounds")
    args = ["--set", f"data.root={tmp_path / 'sounds'}", "--model", "m5", "--set", "model.channels=[16,16,32]"]
    proc = keel("train", "--data", "audio_folder", *args, "--set", "train.batch_size=8", "--epochs", "25",
                "--set", "eval.report=false", "-q", cwd=tmp_path, check=True)  # fmt: skip
    summary = json.loads((tmp_path / "runs" / "latest" / "summary.json").read_text())
    assert summary["test"]["accuracy"] >= 0.9, (summary["test"], proc.stdout)


def test_a_csv_without_enough_train_rows_or_labels_is_one_clear_error(tmp_path: Path):
    from torchkeel.config_data import DataConfig
    from torchkeel.data import load
    from torchkeel.errors import DataError

    write_sound_folder(tmp_path / "sounds", per_class=4)
    files = sorted((tmp_path / "sounds").rglob("*.*"))
    rows = ["file,label,split"] + [f"{f},{f.parent.name},{'train' if i < 1 else 'test'}" for i, f in enumerate(files)]
    (tmp_path / "few.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="leaves 0"):
        load(DataConfig(name="audio_folder", path=str(tmp_path / "few.csv")), seed=0)
    (tmp_path / "blank.csv").write_text(f"file,label\n{files[0]},low\n{files[1]},\n")
    with pytest.raises(DataError, match="line 3: no 'label' value"):
        load(DataConfig(name="audio_folder", path=str(tmp_path / "blank.csv")), seed=0)
