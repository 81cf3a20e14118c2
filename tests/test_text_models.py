"""Text models on the word-order task (label = which of two words comes first), and the
details that make recurrent and attention models correct on padded batches."""

import pytest
import torch
import torch.nn.functional as F

import torchkeel as keel
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.textgen import BLUE, RED, text_spec, word_order_tokens

VOCAB = 32
# one thread: on a busy 2-core machine two OpenMP threads per process spin against each other
# and small models train 10-20x slower (measured); results do not depend on it
THREADS = 1


@pytest.fixture(scope="module")
def word_order() -> DataBundle:
    x, y = word_order_tokens(1500, length=16, vocab_size=VOCAB, min_length=6, seed=1)
    test = 300
    return DataBundle(text_spec("word_order", 16, VOCAB), Split(x[test:], y[test:]), None, Split(x[:test], y[:test]))


def test_the_task_carries_its_label_only_in_word_order(word_order):
    x, y = word_order.train.x, word_order.train.y
    assert ((x == RED).sum(1) == 1).all() and ((x == BLUE).sum(1) == 1).all()
    first_red = (x == RED).float().argmax(1) < (x == BLUE).float().argmax(1)
    assert torch.equal(first_red, y == 0)
    assert 0.4 < y.float().mean() < 0.6
    lengths = (x != 0).sum(1)  # right-padded: every real token before every pad
    assert torch.equal(x != 0, torch.arange(16)[None, :] < lengths[:, None])


def test_bag_of_words_model_fails_the_task(word_order):
    """An MLP over word counts sees the same counts for both labels: it stays at chance."""

    def counts(split: Split) -> Split:
        return Split(F.one_hot(split.x, VOCAB)[:, :, 1:].sum(1).float(), split.y)  # (N, vocab - 1), pad dropped

    spec = DataSpec("word_counts", "table", "classification", (VOCAB - 1,), classes=word_order.spec.classes)
    bag = DataBundle(spec, counts(word_order.train), None, counts(word_order.test))
    torch.manual_seed(0)
    run = keel.fit(
        keel.models.build({"name": "mlp", "hidden": [64]}, spec), bag, epochs=10, threads=THREADS, progress=False
    )
    assert run.evaluate("test")["accuracy"] < 0.62  # chance is 0.5; 0.62 is 4 standard errors above


@pytest.mark.parametrize(
    ("name", "options", "epochs", "lr"),
    [
        ("rnn", {"hidden": 32, "embed_dim": 16}, 6, 3e-3),
        ("lstm", {"hidden": 32, "embed_dim": 16}, 6, 3e-3),
        ("gru", {"hidden": 32, "embed_dim": 16, "bidirectional": True, "pooling": "max"}, 6, 3e-3),
        ("transformer", {"dim": 32, "heads": 2, "dropout": 0.0}, 10, 5e-3),
    ],
)
def test_order_aware_models_learn_the_task(word_order, name, options, epochs, lr):
    torch.manual_seed(0)
    model = keel.models.build({"name": name, **options}, word_order.spec)
    run = keel.fit(model, word_order, epochs=epochs, lr=lr, threads=THREADS, progress=False)
    assert run.evaluate("test")["accuracy"] > 0.9


TEXT = DataSpec("t", "text", "classification", (30,), classes=list("abc"), extra={"vocab_size": 40, "pad_index": 0})


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Texts of lengths 7, 12, 3, right-padded to 12; and the same texts padded to 30."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 40, (3, 12), generator=g)
    x[0, 7:] = 0
    x[2, 3:] = 0
    return x, F.pad(x, (0, 18))


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_recurrent_outputs_ignore_padding(name, pooling):
    torch.manual_seed(0)
    model = keel.models.build({"name": name, "layers": 2, "bidirectional": True, "pooling": pooling}, TEXT).eval()
    short, long = _padded_batch()
    torch.testing.assert_close(model(short), model(long))


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_recurrent_layers_start_orthogonal_with_an_open_forget_gate(name):
    torch.manual_seed(0)
    model = keel.models.build({"name": name, "layers": 2, "bidirectional": True, "hidden": 16}, TEXT)
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[name]
    for key, p in model.rnn.named_parameters():
        if key.startswith("weight_hh"):
            assert p.shape == (gates * 16, 16)
            for block in p.detach().split(16):  # each gate's recurrent matrix is orthogonal
                torch.testing.assert_close(block @ block.T, torch.eye(16), atol=1e-5, rtol=0)
        elif key.startswith("bias"):
            forget = torch.zeros(gates * 16, dtype=torch.bool)
            if name == "lstm" and key.startswith("bias_ih"):
                forget[16:32] = True  # torch's gate order: input, forget, cell, output
            assert torch.equal(p.detach(), forget.float())
    bound = 1 / 16**0.5  # init: torch keeps torch's U(-1/sqrt(H), 1/sqrt(H)) for every tensor
    plain = keel.models.build({"name": name, "hidden": 16, "init": "torch"}, TEXT)
    assert all(p.abs().max() <= bound and p.abs().max() > bound / 2 for p in plain.rnn.parameters())


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_packed_sequences_match_each_text_run_alone(name):
    """The torch reference: each text through the same recurrent layers at its true length,
    no padding at all. The backward direction must start at the last real token."""
    torch.manual_seed(0)
    model = keel.models.build({"name": name, "bidirectional": True, "pooling": "last", "hidden": 8}, TEXT).eval()
    x, _ = _padded_batch()
    pooled = []
    for row in x:
        tokens = row[row != 0][None, :]  # (1, true length)
        _, state = model.rnn(model.embed(tokens))
        h_n = state[0] if isinstance(state, tuple) else state  # (2, 1, H): forward, backward
        pooled.append(torch.cat([h_n[0, 0], h_n[1, 0]]))
    torch.testing.assert_close(model(x), model.head(torch.stack(pooled)))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_transformer_ignores_padding(pooling):
    torch.manual_seed(0)
    model = keel.models.build({"name": "transformer", "pooling": pooling}, TEXT).eval()
    short, long = _padded_batch()
    torch.testing.assert_close(model(short), model(long))


def test_attention_maps_match_the_fused_kernel_and_skip_padding():
    torch.manual_seed(0)
    model = keel.models.build({"name": "transformer", "layers": 3, "heads": 4}, TEXT).eval()
    x, _ = _padded_batch()
    maps = model.attention_maps(x)
    assert len(maps) == 3 and all(m.shape == (3, 4, 13, 13) for m in maps)  # [CLS] + 12 tokens
    for weights in maps:
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 13))
        assert (weights[0, :, :, 1 + 7 :] == 0).all() and (weights[2, :, :, 1 + 3 :] == 0).all()
    # the explicit path that returns weights computes what scaled_dot_product_attention does
    fused, _ = model.encode(x)
    explicit, _ = model.encode(x, return_weights=True)
    torch.testing.assert_close(fused, explicit)


def test_transformer_refuses_inputs_longer_than_it_was_built_for():
    model = keel.models.build("transformer", TEXT)
    with pytest.raises(ValueError, match="at most 30"):
        model(torch.ones(2, 31, dtype=torch.int64))


def test_vit_attention_maps_cover_the_patches():
    spec = DataSpec("m", "image", "classification", (1, 28, 28), classes=list("0123456789"))
    model = keel.models.build({"name": "vit", "layers": 2}, spec).eval()
    maps = model.attention_maps(torch.randn(2, 1, 28, 28))
    assert [m.shape for m in maps] == [(2, 4, 50, 50)] * 2  # [CLS] + 7x7 patches of 4x4 pixels
