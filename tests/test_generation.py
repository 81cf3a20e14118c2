"""Generation: seeded sampling, the KV cache against full recompute, top-k / top-p against a
plain-torch reference, repetition penalty, stop strings, streaming text, run loading."""

import pytest
import torch
from lm_helpers import CHARS, corpus_spec, one_torch_thread, write_run  # noqa: F401 (a fixture)

from torchkeel import Generator
from torchkeel.data.lm_tokenizer import CharTokenizer, train_bpe
from torchkeel.errors import ConfigError, DataError, RunError
from torchkeel.generation.loop import kept_context, sample_steps
from torchkeel.generation.sampling import Sampling, keep_top_k, keep_top_p, next_tokens, penalise_repeats
from torchkeel.generation.speed import cache_speedup
from torchkeel.generation.text import TextAssembler
from torchkeel.models import build


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("lm") / "char-run", corpus_spec(block=16))


def test_a_seed_gives_the_same_text_and_other_seeds_other_text(char_run):
    gen = Generator.from_run(char_run)
    first = gen.generate("ROMEO:", max_tokens=40, seed=1)
    assert len(first) == 40 and set(first) <= set(CHARS)
    assert gen.generate("ROMEO:", max_tokens=40, seed=1) == first
    assert Generator.from_run(char_run).generate("ROMEO:", max_tokens=40, seed=1) == first  # a new process's view
    assert len({gen.generate("ROMEO:", max_tokens=40, seed=s) for s in range(2, 6)} | {first}) == 5
    assert "".join(gen.generate("ROMEO:", max_tokens=40, seed=1, stream=True)) == first
    assert gen.generate("ROMEO:", max_tokens=40, seed=1, cache=False) == first  # same logits, same draws


@pytest.mark.parametrize("prompt_len", [3, 20])  # shorter and longer than the block of 16
def test_the_kv_cache_gives_the_logits_of_full_recompute_at_every_step(prompt_len):
    torch.manual_seed(0)
    model = build({"name": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 16}, corpus_spec(block=16)).eval()
    ids = torch.randint(0, 60, (2, prompt_len))
    greedy = Sampling(top_k=1)
    # 40 new tokens: the context outgrows the block of 16 and is cropped several times
    cached = list(sample_steps(model, ids, 40, greedy, cache=True))
    full = list(sample_steps(model, ids, 40, greedy, cache=False))
    for a, b in zip(cached, full, strict=True):
        torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
        assert torch.equal(a.tokens, b.tokens)
    # and the context each step saw is the documented one: a plain forward pass reproduces it
    seq = torch.cat([ids] + [s.tokens[:, None] for s in cached], 1)
    start = max(0, prompt_len - 16)
    for i, step in enumerate(cached):
        end = prompt_len + i
        if end - start > 16:
            start = end - kept_context(16)
        torch.testing.assert_close(model(seq[:, start:end])[:, -1], step.logits, atol=1e-5, rtol=1e-5)


def test_cached_steps_after_each_fill_are_one_token_decode_steps():
    """sample_steps calls GPT.decode for every step whose context is already in the cache; the
    model's forward runs only to fill the cache: once for the prompt, once per crop."""
    torch.manual_seed(0)
    model = build({"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16}, corpus_spec(block=16)).eval()
    calls = {"decode": 0, "forward": 0}
    decode = model.decode
    model.decode = lambda tokens, cache: (calls.__setitem__("decode", calls["decode"] + 1), decode(tokens, cache))[1]
    model.register_forward_hook(lambda *_: calls.__setitem__("forward", calls["forward"] + 1))
    list(sample_steps(model, torch.zeros(1, 3, dtype=torch.long), 40, Sampling(top_k=1), cache=True))
    crops, start = 0, 0
    for end in range(3, 43):  # the documented cropping rule, counted
        if end - start > 16:
            start, crops = end - kept_context(16), crops + 1
    assert calls == {"forward": 1 + crops, "decode": 40 - 1 - crops}, calls


def _allowed_top_k(logits: torch.Tensor, k: int) -> list[set[int]]:
    order = torch.sort(logits, descending=True).indices
    return [set(row[:k].tolist()) for row in order]


def _allowed_top_p(logits: torch.Tensor, p: float) -> list[set[int]]:
    """Reference: walk the tokens from the most likely, adding them until their mass reaches p."""
    probs, order = torch.sort(logits.softmax(-1), descending=True)
    mass = torch.cumsum(probs, -1)
    allowed = []
    for row_mass, row_order in zip(mass, order, strict=True):
        n = int((row_mass < p).sum()) + 1  # the tokens before the mass reaches p, and the one that does
        allowed.append(set(row_order[:n].tolist()))
    return allowed


@pytest.mark.parametrize(("k", "p"), [(5, 1.0), (None, 0.5), (None, 0.9), (20, 0.8), (1, 0.3)])
def test_top_k_and_top_p_only_ever_return_tokens_of_the_allowed_set(k, p):
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 2
    after_k = keep_top_k(logits, k)
    allowed = _allowed_top_k(logits, k or 50)
    if p < 1:
        allowed = [a & b for a, b in zip(allowed, _allowed_top_p(after_k, p), strict=True)]
    kept = keep_top_p(after_k, p)
    assert [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in kept] == allowed
    rng = torch.Generator().manual_seed(0)
    draws = next_tokens(logits.repeat_interleave(500, 0), torch.zeros(2000, 1, dtype=torch.long),
                        Sampling(top_k=k, top_p=p), rng).view(4, 500)  # fmt: skip
    for row, allowed_row in zip(draws, allowed, strict=True):
        assert set(row.tolist()) <= allowed_row
        if len(allowed_row) <= 5:
            assert set(row.tolist()) == allowed_row  # and they are all drawn


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    rng = torch.Generator().manual_seed(0)
    context = torch.zeros(20000, 1, dtype=torch.long)
    for t in (0.5, 2.0):
        draws = next_tokens(logits.expand(20000, 3), context, Sampling(temperature=t), rng)
        freq = torch.bincount(draws, minlength=3) / 20000
        torch.testing.assert_close(freq, (logits[0] / t).softmax(-1), atol=0.015, rtol=0)


def test_repetition_penalty_is_ctrls_rule():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = penalise_repeats(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]  # positive logits halved, negative doubled, others kept


def test_sampling_options_are_checked():
    for bad, message in [
        (Sampling(temperature=0), "temperature must be > 0"),
        (Sampling(temperature=float("nan")), "temperature must be > 0"),
        (Sampling(top_p=0), r"top-p must be in \(0, 1\]"),
        (Sampling(top_p=1.5), r"top-p must be in \(0, 1\]"),
        (Sampling(top_k=0), "top-k must be >= 1"),
        (Sampling(repetition_penalty=0.5), "repetition penalty must be >= 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            bad.check()


def test_bad_requests_fail_before_anything_is_generated(char_run):
    gen = Generator.from_run(char_run)
    with pytest.raises(ConfigError, match="max tokens must be between 1 and 10,000"):
        gen.generate("A", max_tokens=0, stream=True)  # not at the first next()
    with pytest.raises(ConfigError, match="max tokens must be between 1 and 10,000"):
        gen.generate("A", max_tokens=10_001)


def test_prompt_characters_outside_the_vocabulary_are_named(char_run):
    gen = Generator.from_run(char_run)
    with pytest.raises(DataError, match=r"2 character\(s\) outside this model's 61-character vocabulary: '7', 'é'"):
        gen.generate("café 7", max_tokens=3)
    dropped = gen.generate("café 7", max_tokens=5, seed=0, drop_unknown=True)
    assert dropped == gen.generate("caf ", max_tokens=5, seed=0)  # what encode does: leaves them out


def test_an_empty_prompt_starts_from_a_newline(char_run):
    gen = Generator.from_run(char_run)
    assert gen.encode_prompt("") == [CHARS.index("\n")]
    assert gen.generate("", max_tokens=10, seed=3) == gen.generate("\n", max_tokens=10, seed=3)


def test_stop_strings_end_the_text_and_are_not_part_of_it(char_run):
    gen = Generator.from_run(char_run)
    full = gen.generate("A", max_tokens=60, seed=4)
    stop = full[20:22]  # a string this seed is known to produce
    cut = full[: full.index(stop)]
    assert gen.generate("A", max_tokens=60, seed=4, stop=[stop, "never"]) == cut
    assert "".join(gen.generate("A", max_tokens=60, seed=4, stop=stop, stream=True)) == cut


def test_streamed_pieces_never_show_half_a_character_or_the_start_of_a_stop_string():
    text = "héllo wörld, 日本語のテキスト, naïve café 🎉 " * 3
    bpe = train_bpe([text], vocab_size=270)
    ids = bpe.encode(text)
    assembler = TextAssembler(bpe.decode)
    pieces = [assembler.push(i) for i in ids] + [assembler.finish()]
    assert "".join(pieces) == text and not any("\ufffd" in piece for piece in pieces)
    assert sum(1 for i in ids if "\ufffd" in bpe.decode([i])) > 0  # some tokens are parts of characters
    chars = CharTokenizer("abc")
    stopping = TextAssembler(chars.decode, stop=["bc"])
    assert [stopping.push(i) for i in chars.encode("aabab")] == ["a", "a", "", "ba", ""]
    assert stopping.push(2) == "" and stopping.stopped and stopping.text == "aaba"


def test_many_samples_are_drawn_as_one_batch(char_run):
    gen = Generator.from_run(char_run)
    texts = gen.generate_many("ROMEO:", 3, max_tokens=30, seed=0)
    assert len(texts) == 3 and all(len(t) == 30 for t in texts) and len(set(texts)) == 3
    assert gen.generate_many("ROMEO:", 3, max_tokens=30, seed=0) == texts
    stopped = gen.generate_many("ROMEO:", 3, max_tokens=30, seed=0, stop=texts[1][5:7])
    assert stopped[1] == texts[1][: texts[1].index(texts[1][5:7])]


def test_a_run_of_another_task_points_at_its_command(tmp_path):
    from torchkeel.data.bundle import DataSpec

    table = DataSpec("t", "table", "classification", (4,), classes=["a", "b", "c"])
    run = write_run(tmp_path / "clf", table, {"name": "mlp"})
    with pytest.raises(
        RunError,
        match="clf is a classification run, not a language model.*`keel predict clf` is the command for classifiers",
    ):
        Generator.from_run(run)
    with pytest.raises(RunError, match="has no trained model"):
        Generator.from_run(tmp_path)


def test_the_speed_measure_runs_both_paths():
    torch.manual_seed(0)
    model = build({"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16}, corpus_spec(block=8))
    speeds = cache_speedup(model, new_tokens=12, rounds=1)  # 12 > the block: cropping included
    assert speeds["tokens_per_s_cache"] > 0 and speeds["tokens_per_s_no_cache"] > 0 and speeds["speedup"] > 0


def test_a_byte_level_bpe_run_streams_pieces_that_are_never_revised(tmp_path):
    bpe = train_bpe(["héllo wörld, 日本語のテキスト, naïve café 🎉 " * 5], vocab_size=300)
    run = write_run(tmp_path / "bpe-run", corpus_spec(bpe.to_dict(), vocab=bpe.vocab_size, block=16))
    gen = Generator.from_run(run)
    assert gen.encode_prompt("日本") == bpe.encode("日本")  # nothing is unknown to bytes
    for seed in range(3):  # random weights: tokens in any order, many of them parts of characters
        pieces = list(gen.generate("日本", max_tokens=40, seed=seed, stream=True))
        steps = sample_steps(gen.model, torch.tensor([bpe.encode("日本")]), 40, Sampling(),
                             torch.Generator().manual_seed(seed))  # fmt: skip
        whole = bpe.decode([int(s.tokens[0]) for s in steps])  # the same draws, decoded at once
        # a shown U+FFFD is never a character that later tokens complete: what was shown stays
        assert "".join(pieces) == whole and len(pieces) > 1
