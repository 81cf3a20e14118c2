"""The ``gpt`` language model: shapes, causality, GPT-2 init, weight tying, the KV cache."""

import math

import pytest
import torch
import torch.nn.functional as F

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models import build, count_parameters


def corpus_spec(vocab: int = 11, block: int = 16) -> DataSpec:
    """A language-model corpus's DataSpec as the text_file data writes it."""
    tokenizer = {"type": "char", "chars": [chr(97 + i) for i in range(vocab)]}
    extra = {"vocab_size": vocab, "block_size": block, "tokenizer": tokenizer, "chars_per_token": 1.0}
    return DataSpec("corpus", "text", "language_model", (block,), extra=extra)


def tiny(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build({"name": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 16, **options}, corpus_spec())


def scrambled(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter N(0, 0.5): biases and norms away from 0 and 1, and the MLP's inputs in
    the GELU's curved range (GPT-2's init leaves them near 0, where it is almost linear), so a
    dropped or mis-scaled term in the decode step shows in the logits."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


def test_forward_gives_next_token_logits_at_every_position_and_gradients():
    model = tiny()
    x = torch.randint(0, 11, (3, 16))
    logits = model(x)
    assert logits.shape == (3, 16, 11) and logits.dtype == torch.float32
    F.cross_entropy(logits.flatten(0, 1), x.roll(-1, 1).flatten()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_block_size_defaults_to_the_data_and_longer_inputs_are_refused():
    model = tiny()
    assert model.block_size == 16 and model.pos.num_embeddings == 16
    assert tiny(block_size=8).block_size == 8
    with pytest.raises(ValueError, match="17 positions exceed this model's context of 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_attention_is_causal():
    model = tiny().eval()
    x = torch.randint(0, 11, (1, 12))
    changed = x.clone()
    changed[0, 7] = (x[0, 7] + 1) % 11
    a, b = model(x), model(changed)
    assert torch.equal(a[:, :7], b[:, :7])  # positions before the change see nothing of it
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_weights_are_tied_and_counted_once():
    model = tiny()
    assert model.head.weight is model.tok.weight
    n, v, t, layers = 16, 11, 16, 2
    block = 2 * (2 * n) + (3 * n * n + 3 * n) + (n * n + n) + (4 * n * n + 4 * n) + (4 * n * n + n)
    assert count_parameters(model) == v * n + t * n + layers * block + 2 * n  # + the final LayerNorm


def test_gpt2_init_scales_the_residual_projections_by_depth():
    torch.manual_seed(0)
    model = build({"name": "gpt", "n_layer": 8, "n_head": 4, "n_embd": 256}, corpus_spec(vocab=500, block=64))
    residual = 0.02 / math.sqrt(2 * 8)
    for block in model.blocks:
        assert block.attn.proj.weight.std().item() == pytest.approx(residual, rel=0.05)
        assert block.mlp[2].weight.std().item() == pytest.approx(residual, rel=0.05)
        assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.attn.qkv.bias.abs().max() == 0
    assert model.tok.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.pos.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_bias_false_drops_every_bias():
    model = tiny(bias=False)
    assert not [name for name, _ in model.named_parameters() if name.endswith("bias")]


def test_dropout_is_active_in_training_only():
    model = tiny(dropout=0.5)
    x = torch.randint(0, 11, (2, 16))
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunks", [[16], [5, 1, 1, 1, 8], [1] * 16, [9, 7]])
def test_the_kv_cache_gives_the_logits_of_a_full_forward_pass(chunks, bias):
    """Chunks of one token after the first go through GPT.decode (the one-token step), longer
    ones through the blocks: both give what one pass over the whole sequence gives."""
    model = scrambled(tiny(bias=bias)).eval()
    x = torch.randint(0, 11, (2, 16))
    full = model(x)
    cache = model.new_cache(2)
    pieces, start = [], 0
    for size in chunks:
        pieces.append(model(x[:, start : start + size], cache=cache))
        start += size
    assert cache.length == 16
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)


def test_a_full_cache_refuses_more_and_reset_starts_again():
    model = tiny().eval()
    cache = model.new_cache(1, max_len=4)
    x = torch.randint(0, 11, (1, 4))
    model(x, cache=cache)
    with pytest.raises(ValueError, match="exceed this model's context of 4"):
        model(x[:, :1], cache=cache)
    cache.reset()
    torch.testing.assert_close(model(x[:, 1:], cache=cache), model(x[:, 1:]), atol=1e-5, rtol=1e-5)


def test_non_corpus_data_and_bad_head_counts_are_refused():
    text = DataSpec("imdb", "text", "classification", (20,), classes=["neg", "pos"], extra={"vocab_size": 50})
    with pytest.raises(ConfigError, match="model 'gpt' is a causal language model.*data 'imdb' is not one"):
        build("gpt", text)
    with pytest.raises(ConfigError, match=r"n_embd \(30\) must be divisible by model.n_head \(4\)"):
        build({"name": "gpt", "n_embd": 30, "n_head": 4}, corpus_spec())


def test_it_learns_a_repeated_pattern_to_near_zero_loss():
    model = tiny()
    pattern = torch.tensor([0, 3, 1, 4, 1, 5, 9, 2, 6, 5])  # period 10: the next token follows from the last two
    stream = pattern.repeat(20)
    windows = torch.arange(len(stream) - 16)
    x_all = torch.stack([stream[s : s + 16] for s in windows])  # (N, 16)
    y_all = torch.stack([stream[s + 1 : s + 17] for s in windows])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(80):
        batch = torch.randint(0, len(windows), (8,), generator=gen)
        loss = F.cross_entropy(model(x_all[batch]).flatten(0, 1), y_all[batch].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        held = F.cross_entropy(model.eval()(x_all).flatten(0, 1), y_all.flatten())
    assert held.item() < 0.05  # nats per token; a uniform guess over 11 tokens is 2.4


def test_a_cache_kept_across_a_weight_change_decodes_with_the_new_weights():
    """GPT.decode's transposed (and scaled) copies are remade when a weight or the scaled bias
    changes in place (training or load_state_dict between two uses of one cache)."""
    model = scrambled(tiny(bias=True)).eval()
    x = torch.randint(0, 11, (1, 6))
    cache = model.new_cache(1)
    model(x[:, :5], cache=cache)
    model(x[:, 5:], cache=cache)  # a one-token step: the copies are made
    for change in ("weight", "bias"):  # one at a time: each must be noticed on its own
        with torch.no_grad():
            for block in model.blocks:
                getattr(block.mlp[0], change).add_(0.5)
        cache.reset()
        model(x[:, :5], cache=cache)
        torch.testing.assert_close(model(x[:, 5:], cache=cache), model(x)[:, 5:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_the_decode_step_under_autocast_keeps_the_residual_as_forward_does(bias, monkeypatch):
    """Under autocast the residual stream stays float32, as in forward (each layer norm reads
    it in float32), with or without biases (without, decode fuses the sum into one product
    only outside autocast)."""
    model = scrambled(tiny(bias=bias)).eval()
    x = torch.randint(0, 11, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        full = model(x)
        cache = model.new_cache(2)
        model(x[:, :7], cache=cache)
        seen, layer_norm = [], F.layer_norm
        monkeypatch.setattr(F, "layer_norm", lambda h, *a, **k: seen.append(h.dtype) or layer_norm(h, *a, **k))
        step = model(x[:, 7:], cache=cache)  # GPT.decode
    assert step.dtype == full.dtype
    assert seen == [torch.float32] * 5  # two per block, then the final norm
    torch.testing.assert_close(step, full[:, 7:], atol=0.05, rtol=0.05)
