"""Translation: the encoder-decoder, its decoding (greedy, beam, KV cache), the metrics against
sacreBLEU, the length-bucketed batches, and training on small invented languages."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from pairs_helpers import copy_pairs, invented_pairs, pairs_config, write_tsv

import torchkeel as keel
from torchkeel.data import load
from torchkeel.data.bundle import DataSpec
from torchkeel.data.pairs_loader import LengthBatchLoader, PairSplit
from torchkeel.generation.seq2seq import EOS, Decoding, beam_search, greedy, translate
from torchkeel.models import build
from torchkeel.tasks.translate import Detokenizer, Translated, TranslationScores

pytest.importorskip("sacrebleu")

SMALL = {"name": "transformer_seq2seq", "layers": 2, "width": 32, "heads": 4, "ffn": 64, "dropout": 0.0}
TRAINED = {**SMALL, "width": 64, "heads": 2, "ffn": 128}  # learns the invented language in 8 epochs of 1,500 pairs


def _spec(vocab: int = 40) -> DataSpec:
    return DataSpec("p", "text", "translation", (20,), extra={"vocab_size": vocab, "target_vocab_size": vocab})


def _batch(vocab: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (5, 9), generator=g)
    src[1, 4:] = 0  # a shorter sentence, right-padded
    tgt = torch.cat([torch.full((5, 1), 2), torch.randint(4, vocab, (5, 7), generator=g)], 1)
    return src, tgt


def _model(vocab: int = 40, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build({**SMALL, **options}, _spec(vocab)).eval()


def test_the_cached_decoder_gives_the_logits_of_the_full_recompute():
    model, (src, tgt) = _model(), _batch()
    with torch.inference_mode():
        full = model(src, tgt)  # (B, T, V) teacher-forced, all positions at once
        memory = model.encode(src)
        cached, recomputed = model.start(memory, cache=True), model.start(memory, cache=False)
        for t in range(tgt.shape[1]):
            a, b = model.next_logits(cached), model.next_logits(recomputed)
            torch.testing.assert_close(a, full[:, t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(b, full[:, t], atol=1e-5, rtol=1e-5)
            if t + 1 < tgt.shape[1]:
                cached.append(tgt[:, t + 1])
                recomputed.append(tgt[:, t + 1])


def test_padding_in_the_source_changes_no_output():
    model, (src, tgt) = _model(), _batch()
    wider = torch.cat([src, torch.zeros(5, 6, dtype=src.dtype)], 1)
    with torch.inference_mode():
        torch.testing.assert_close(model(src, tgt), model(wider, tgt))
        one = model(src[1:2, :4], tgt[1:2])  # the short sentence alone, without its padding
        torch.testing.assert_close(model(src, tgt)[1:2], one, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache", [True, False])
def test_beam_size_one_is_greedy_and_the_cache_changes_no_translation(cache):
    model, (src, _) = _model(), _batch()
    with torch.inference_mode():
        memory = model.encode(src)
        reference = greedy(model, memory, Decoding(beam=1, cache=True))
        assert torch.equal(greedy(model, memory, Decoding(beam=1, cache=cache)), reference)
        assert torch.equal(beam_search(model, memory, Decoding(beam=1, cache=cache)), reference)
        wide = Decoding(beam=4, cache=True)
        assert torch.equal(beam_search(model, memory, wide), beam_search(model, memory, Decoding(beam=4, cache=False)))


def _sequence_score(model, src: torch.Tensor, tokens: list[int], penalty: float) -> float:
    tgt = torch.tensor([[2, *tokens]])
    logp = model(src, tgt[:, :-1]).log_softmax(-1)[0]  # (T, V)
    total = float(sum(logp[i, t] for i, t in enumerate(tokens)))
    return total / len(tokens) ** penalty


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_a_wide_beam_finds_the_best_translation_an_exhaustive_search_finds(penalty):
    """Vocabulary of 6 and at most 3 output tokens: every possible output is scored."""
    model = _model(vocab=6)
    src = torch.tensor([[4, 5, 4]])
    decoding = Decoding(beam=40, length_penalty=penalty, max_length_ratio=0.0, max_length_extra=3)
    with torch.inference_mode():
        found = beam_search(model, model.encode(src), decoding)[0]
        words = [t for t in range(6) if t != EOS]
        outputs = [[*w, EOS] for n in range(3) for w in itertools.product(words, repeat=n)]
        best = max(outputs, key=lambda o: _sequence_score(model, src, o, penalty))
    assert [t for t in found.tolist() if t] == [t for t in best[:-1] if t]  # padding ids read as none


def test_an_untrained_model_stops_at_the_length_limit():
    model, (src, _) = _model(), _batch()
    decoding = Decoding(beam=1, max_length_ratio=1.0, max_length_extra=2)
    with torch.inference_mode():
        out = translate(model, model.encode(src), decoding)
    assert out.shape[1] <= 9 + 2 - 1  # at most ratio * longest source + extra tokens, EOS one of them


@pytest.fixture(scope="module")
def invented(tmp_path_factory: pytest.TempPathFactory):
    path = write_tsv(tmp_path_factory.mktemp("pairs") / "pairs.tsv", invented_pairs(2000))
    return load(pairs_config(path))


def test_the_scores_are_sacrebleus_corpus_scores_however_the_batches_fall(invented):
    import sacrebleu

    spec = invented.spec
    hyps = ["Red dog runs.", "Small child eats bread over field.", "Green.", "Bread eats dog red."]
    refs = ["Red dog runs.", "Small child eats bread.", "Green field.", "Dog eats red bread."]
    from torchkeel.data.tokenize import tokenizer_from_dict

    tok = tokenizer_from_dict(spec.extra["target_tokenizer"])

    def ids(texts: list[str], bos: bool) -> torch.Tensor:
        rows = [([2] if bos else []) + seq + [3] for seq in tok.encode_batch(texts)]
        return torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r in rows], batch_first=True)

    scores = TranslationScores(spec, ["bleu", "bleu_lowercase", "chrf"], torch.device("cpu"))
    for part in (slice(0, 1), slice(1, 4)):  # two batches
        y = ids(refs[part], bos=True)
        logits = torch.zeros(len(y), y.shape[1] - 1, spec.extra["target_vocab_size"])
        scores.update(Translated(logits, ids(hyps[part], bos=False), y[:, 1:]), y)
    values = scores.compute()
    assert Detokenizer(spec)(ids(hyps, bos=False)) == hyps  # the detokenised text is the text
    assert values["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert values["bleu_lowercase"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score)
    assert values["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert "tok:13a" in scores.details()["signatures"]["bleu"]


def test_length_batches_cover_every_pair_once_with_little_padding_and_resume_exactly():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (900,), generator=g)
    x = (torch.arange(45)[None] < lengths[:, None]).long() * 5
    y = (torch.arange(48)[None] < lengths[:, None] + 2).long() * 7
    loader = LengthBatchLoader(PairSplit(x, y), 64, seed=3)
    plan = loader.plan(0)
    assert len(plan) == len(loader) == math.ceil(900 / 64)
    assert sorted(torch.cat(plan).tolist()) == list(range(900))
    batches = list(loader.epoch(0))
    padded = sum(xb.numel() for xb, _ in batches)
    assert int((x != 0).sum()) / padded > 0.85  # random batches of 64 fill about half
    resumed = list(loader.epoch(0, start=5))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches[5:], resumed, strict=True))
    assert not torch.equal(torch.cat(loader.plan(0)), torch.cat(loader.plan(1)))  # a new order each epoch
    shards = [list(LengthBatchLoader(PairSplit(x, y), 64, seed=3, rank=r, world_size=2).epoch(0)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(plan)


@pytest.fixture(scope="module")
def trained(invented):
    torch.manual_seed(0)
    model = build({**TRAINED, "beam": 3}, invented.spec)
    return keel.fit(model, invented, epochs=8, optimizer="adamw", lr=3e-3, batch_size=32, progress=False)


def test_a_small_transformer_learns_an_invented_language_that_needs_attention(trained):
    """Word for word, in the reverse order: the decoder must attend to the right source word."""
    result = trained.evaluate("test", metrics=["bleu", "chrf", "perplexity"])  # beam search, 3 wide
    assert result["bleu"] > 70 and result["chrf"] > 85 and result["perplexity"] < 1.5
    assert trained.history[-1]["val/bleu"] > 60  # validated greedily each epoch


def test_predictions_are_translations_in_the_task_json(trained, invented):
    from torchkeel.serve.predictor import Predictor

    predictor = Predictor(trained.model, invented.spec)
    (result,) = predictor.predict_texts(["zab lupo kir."])
    assert result.output == {"translation": "Runs dog red."}
    assert result.text == "Runs dog red."


@pytest.mark.parametrize("reverse", [False, True], ids=["copy", "reverse"])
def test_a_small_transformer_learns_to_copy_and_to_reverse(reverse: bool, tmp_path: Path):
    data = load(pairs_config(write_tsv(tmp_path / "p.tsv", copy_pairs(2000, reverse=reverse))))
    torch.manual_seed(0)
    model = build({**TRAINED, "beam": 1}, data.spec)
    run = keel.fit(model, data, epochs=8, optimizer="adamw", lr=3e-3, batch_size=32, progress=False)
    assert run.evaluate("test", metrics=["bleu"])["bleu"] > 70


def test_a_model_for_translation_refuses_other_text():
    spec = DataSpec("x", "text", "classification", (20,), classes=list("ab"), extra={"vocab_size": 30})
    with pytest.raises(keel.errors.ConfigError, match="parallel text"):
        build("transformer_seq2seq", spec)


def test_a_joint_vocabulary_shares_one_embedding_and_separate_ones_do_not(tmp_path: Path):
    path = write_tsv(tmp_path / "p.tsv", invented_pairs(200))
    joint = load(pairs_config(path))
    separate = load(pairs_config(path, joint=False))
    shared = build({**SMALL}, joint.spec)
    assert shared.source_embed is shared.target_embed
    apart = build({**SMALL}, separate.spec)
    assert apart.source_embed is not apart.target_embed
    with pytest.raises(keel.errors.ConfigError, match="joint"):
        build({**SMALL, "share_embeddings": True}, separate.spec)
