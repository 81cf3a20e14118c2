"""gru_seq2seq: the decoding interface (hidden-state cache, beam search, padding) and training on
the invented language that needs attention (tests/pairs_helpers.py)."""

from __future__ import annotations

import pytest
import torch
from pairs_helpers import invented_pairs, pairs_config, write_tsv

import torchkeel as keel
from torchkeel.data import load
from torchkeel.data.bundle import DataSpec
from torchkeel.generation.seq2seq import Decoding, beam_search, greedy
from torchkeel.models import build
from torchkeel.serve.predictor import Predictor

SMALL = {"name": "gru_seq2seq", "width": 32, "dropout": 0.0}
# 5 epochs of its 1,408 training pairs: test BLEU 89-98 over seeds 0-3 (4-5 s of one CPU core)
TRAINED = {**SMALL, "width": 64}


def _spec(vocab: int = 40) -> DataSpec:
    return DataSpec("p", "text", "translation", (20,), extra={"vocab_size": vocab, "target_vocab_size": vocab})


def _batch(vocab: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (5, 9), generator=g)
    src[1, 4:] = 0  # a shorter sentence, right-padded
    tgt = torch.cat([torch.full((5, 1), 2), torch.randint(4, vocab, (5, 7), generator=g)], 1)
    return src, tgt


def _model(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build({**SMALL, **options}, _spec()).eval()


@pytest.mark.parametrize("layers", [1, 2])
def test_the_cached_hidden_state_gives_the_logits_of_the_full_recompute(layers):
    model, (src, tgt) = _model(layers=layers), _batch()
    with torch.inference_mode():
        full = model(src, tgt)  # (B, T, V) teacher-forced
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
        weights = model.cross_attention(src, tgt)  # (B, T, S): none on padding
    assert weights.shape == (5, 8, 9) and weights[1, :, 4:].abs().max() == 0
    torch.testing.assert_close(weights.sum(-1), torch.ones(5, 8))


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


def test_a_model_for_translation_refuses_other_text_and_shares_only_a_joint_vocabulary():
    text = DataSpec("x", "text", "classification", (20,), classes=list("ab"), extra={"vocab_size": 30})
    with pytest.raises(keel.errors.ConfigError, match="parallel text"):
        build("gru_seq2seq", text)
    joint = DataSpec(
        "p", "text", "translation", (20,), extra={"vocab_size": 40, "target_vocab_size": 40, "joint": True}
    )
    shared = build(SMALL, joint)
    assert shared.source_embed is shared.target_embed
    separate = DataSpec("p", "text", "translation", (20,), extra={"vocab_size": 40, "target_vocab_size": 30})
    apart = build(SMALL, separate)
    assert apart.source_embed is not apart.target_embed
    with pytest.raises(keel.errors.ConfigError, match="joint"):
        build({**SMALL, "share_embeddings": True}, separate)


@pytest.fixture(scope="module")
def invented(tmp_path_factory: pytest.TempPathFactory):
    path = write_tsv(tmp_path_factory.mktemp("pairs") / "pairs.tsv", invented_pairs(2000))
    return load(pairs_config(path))


def test_a_small_gru_learns_an_invented_language_that_needs_attention(invented):
    """Word for word, in the reverse order: the decoder must attend to the right source word."""
    torch.manual_seed(0)
    model = build({**TRAINED, "beam": 3}, invented.spec)
    trained = keel.fit(model, invented, epochs=5, optimizer="adamw", lr=3e-3, batch_size=32, progress=False)
    result = trained.evaluate("test", metrics=["bleu", "chrf"])  # beam search, 3 wide
    assert result["bleu"] > 60 and result["chrf"] > 80
    assert trained.history[-1]["val/bleu"] > 60  # validated greedily each epoch
    (prediction,) = Predictor(trained.model, invented.spec).predict_texts(["zab lupo kir."])
    assert prediction.output == {"translation": "Runs dog red."}  # predict and serve, unchanged
