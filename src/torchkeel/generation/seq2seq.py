"""Decoding a sequence-to-sequence model: greedy and beam search, batched, with a KV cache.

Both work through the model's decoding interface (models/seq2seq.py): ``encode``, ``start``,
``next_logits`` and the state's ``append`` and ``reorder``. A translation may run to
``max_length_ratio * source tokens + max_length_extra`` tokens (1.5x + 10: room for a target
language that takes more tokens than the source, yet bounded, so an untrained model's babble
ends), after which EOS is forced.

Beam search keeps ``beam`` hypotheses per sentence. Each step scores every one-token extension
by its summed log-probability and takes the best ``2 * beam``: those ending in EOS among the
first ``beam`` are finished, scored by their log-probability over their length to the power
``length_penalty`` (fairseq's ``lenpen``; 0 ranks by raw log-probability, which favours short
output), and the best ``beam`` others live on. A sentence is done when it has ``beam``
finished hypotheses (fairseq's default stopping rule); its best finished one is the output.
With ``beam`` 1 this is greedy decoding, token for token (tests/test_seq2seq.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BOS, EOS, PAD = 2, 3, 0


@dataclass(frozen=True)
class Decoding:
    beam: int = 1  # 1: greedy
    length_penalty: float = 1.0
    max_length_ratio: float = 1.5
    max_length_extra: int = 10
    cache: bool = True  # the decoder's KV cache (off: every step recomputes the whole prefix)


def output_limits(memory, decoding: Decoding) -> torch.Tensor:
    """(B,) the most target tokens (EOS included) each sentence may get."""
    sources = memory.mask.sum(1).float()
    return (sources * decoding.max_length_ratio).long() + decoding.max_length_extra


@torch.inference_mode()
def translate(model, memory, decoding: Decoding) -> torch.Tensor:
    """(B, L) target ids of each sentence's translation (after BOS, before EOS), padded with 0."""
    return greedy(model, memory, decoding) if decoding.beam == 1 else beam_search(model, memory, decoding)


def greedy(model, memory, decoding: Decoding) -> torch.Tensor:
    limits = output_limits(memory, decoding)
    state = model.start(memory, cache=decoding.cache, bos=BOS)
    done = torch.zeros(len(limits), dtype=torch.bool, device=limits.device)
    for t in range(int(limits.max())):
        logits = model.next_logits(state)  # (B, V)
        tokens = logits.argmax(-1)
        tokens = torch.where(t + 1 >= limits, EOS, tokens)  # out of room: the sentence ends here
        tokens = torch.where(done, PAD, tokens)
        state.append(tokens)
        done |= tokens == EOS
        if bool(done.all()):
            break
    return _before_eos(state.tokens[:, 1:])


def beam_search(model, memory, decoding: Decoding) -> torch.Tensor:
    k, b = decoding.beam, memory.states.shape[0]
    limits = output_limits(memory, decoding)
    state = model.start(memory.repeat(k), cache=decoding.cache, bos=BOS)
    scores = torch.full((b, k), float("-inf"), device=limits.device)
    scores[:, 0] = 0.0  # the first step extends one hypothesis, not k copies of it
    finished: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool)
    rows = torch.arange(b, device=limits.device)[:, None] * k  # (B, 1) each sentence's first row
    for t in range(int(limits.max())):
        logp = model.next_logits(state).float().log_softmax(-1)  # (B * k, V)
        vocab = logp.shape[-1]
        out_of_room = (t + 1 >= limits).repeat_interleave(k)
        not_eos = torch.arange(vocab, device=logp.device) != EOS
        logp[out_of_room[:, None] & not_eos] = float("-inf")  # out of room: EOS, at its own probability
        candidates = (scores[:, :, None] + logp.view(b, k, vocab)).view(b, k * vocab)
        top, index = candidates.topk(2 * k, dim=1)  # (B, 2k)
        origin, tokens = index // vocab, index % vocab
        ends = tokens == EOS
        _collect(finished, done, top, origin, ends, state.tokens.view(b, k, -1), k, decoding.length_penalty)
        if bool(done.all()):
            break
        # the best k candidates that do not end; finished sentences keep decoding, unused
        rank = torch.arange(2 * k, device=top.device).expand(b, -1)
        keep = (rank + ends * 2 * k).argsort(dim=1)[:, :k]  # (B, k)
        scores = top.gather(1, keep)
        state.reorder((rows + origin.gather(1, keep)).flatten(), same_source=True)  # within each sentence
        state.append(tokens.gather(1, keep).flatten())
    best = [max(hyps, key=lambda h: h[0])[1] for hyps in finished]
    return _padded(best, limits.device)


def _collect(finished, done, top, origin, ends, tokens, k: int, length_penalty: float) -> None:
    """Move the hypotheses that end in EOS among each sentence's best k into ``finished``."""
    for sentence, j in torch.nonzero(ends[:, :k]).tolist():
        if done[sentence] or top[sentence, j] == float("-inf"):
            continue  # -inf: an extension of a hypothesis that does not exist yet (step 0)
        prefix = tokens[sentence, origin[sentence, j], 1:]  # after BOS
        length = len(prefix) + 1  # EOS counts
        finished[sentence].append((float(top[sentence, j]) / length**length_penalty, prefix))
        if len(finished[sentence]) >= k:
            done[sentence] = True


def _before_eos(ids: torch.Tensor) -> torch.Tensor:
    """(B, L) ids with EOS and everything after it set to PAD, as wide as the longest row."""
    ids = ids.masked_fill((ids == EOS).cumsum(1) > 0, PAD)
    return ids[:, : max(1, int((ids != PAD).sum(1).max()))]


def _padded(rows: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    width = max(1, max(len(r) for r in rows))
    out = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return _before_eos(out)
