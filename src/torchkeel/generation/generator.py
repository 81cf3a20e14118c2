"""``Generator``: a trained language model and its tokeniser, from a run folder, generating text.

    gen = Generator.from_run("runs/latest")
    print(gen.generate("ROMEO:", max_tokens=200, temperature=0.8, top_k=200, seed=1))
    for piece in gen.generate("ROMEO:", stream=True):  # text as it is produced
        print(piece, end="", flush=True)

The text returned is the continuation only (the prompt is not repeated). An empty prompt is
allowed: the model starts from the tokeniser's start-of-text token when it has one (GPT-2's
<|endoftext|>), else from a newline when the vocabulary has one (nanoGPT's sample.py starts
from "\\n"), else from token 0; that start token is not part of the text. A prompt with
characters a character-level vocabulary lacks is refused, naming them, unless
``drop_unknown=True``, which leaves them out of what the model sees.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkeel.errors import DataError, RunError
from torchkeel.generation.loop import sample_steps
from torchkeel.generation.sampling import Sampling, check_max_tokens
from torchkeel.generation.text import TextAssembler

MAX_PROMPT_CHARS = 100_000


def load_tokenizer(spec: Any) -> Any:
    """The tokeniser a language-model run was trained with (its DataSpec's ``extra["tokenizer"]``)."""
    from torchkeel.data.lm_tokenizer import tokenizer_from_spec  # a pretrained model's own too

    return tokenizer_from_spec(spec)


def not_a_language_model(task: Any, run: str) -> RunError:
    """The refusal for a run of another task, pointing at the command that fits it."""
    if "sample" in task.uses:
        other = f"`keel sample {run}` draws images from a GAN"
    else:
        other = f"`keel predict {run}` is the command for classifiers and regressors"
    return RunError(
        f"{run} is a {task.description} run, not a language model: `keel generate` needs a run trained on "
        f"a text corpus (data text_file); {other}"
    )


class Generator:
    def __init__(self, model: nn.Module, tokenizer: Any, name: str = "model"):
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.device = next(model.parameters()).device

    @classmethod
    def from_run(cls, run_dir: str | Path, model_code: Any = None, device: str | torch.device = "cpu") -> Generator:
        """The model and tokeniser of a finished language-model run (a folder)."""
        from torchkeel.run_model import load_model
        from torchkeel.tasks import task_of

        run_dir = Path(run_dir)
        model, spec, _ = load_model(run_dir, device, model_code)
        task = task_of(spec)
        if "generate" not in task.uses:
            raise not_a_language_model(task, run_dir.name)
        return cls(model, load_tokenizer(spec), run_dir.name)

    def encode_prompt(self, prompt: str, drop_unknown: bool = False) -> list[int]:
        """The prompt's token ids (the start token for an empty prompt); unknown characters refused."""
        if len(prompt) > MAX_PROMPT_CHARS:
            raise DataError(f"the prompt has {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
        unknown = self.tokenizer.unknown(prompt)
        if unknown and not drop_unknown:
            shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            size = self.tokenizer.vocab_size
            raise DataError(
                f"the prompt has {len(unknown)} character(s) outside this model's {size}-character vocabulary"
                f": {shown}; remove them, or drop them (--drop-unknown; the model never saw them)"
            )
        ids = self.tokenizer.encode(prompt)
        return ids or self.start_ids()

    def start_ids(self) -> list[int]:
        bos = getattr(self.tokenizer, "bos_id", None)
        if bos is not None:
            return [bos]
        return self.tokenizer.encode("\n") if not self.tokenizer.unknown("\n") else [0]

    def generate(
        self,
        prompt: str,
        max_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] | str = (),
        seed: int | None = None,
        stream: bool = False,
        cache: bool = True,
        drop_unknown: bool = False,
    ) -> str | Iterator[str]:
        """The continuation of ``prompt`` (str), or with ``stream=True`` an iterator of its pieces
        as they are produced. Ends after ``max_tokens`` tokens, at the first ``stop`` string (not
        included) or at the tokeniser's end-of-text token. The same ``seed`` gives the same text."""
        pieces = self._pieces(prompt, max_tokens, temperature, top_k, top_p, repetition_penalty, stop, seed, cache,
                              drop_unknown)  # fmt: skip
        return pieces if stream else "".join(pieces)

    def generate_many(
        self, prompt: str, n: int, max_tokens: int = 200, seed: int | None = None, **options
    ) -> list[str]:
        """``n`` continuations of one prompt, drawn as one batch (one forward pass per step)."""
        ids = torch.tensor([self.encode_prompt(prompt, options.pop("drop_unknown", False))] * n, device=self.device)
        stop, cache = options.pop("stop", ()), options.pop("cache", True)
        steps = sample_steps(self.model, ids, check_max_tokens(max_tokens), Sampling(**options).check(),
                             self._rng(seed), cache)  # fmt: skip
        texts = [TextAssembler(self.tokenizer.decode, _stops(stop)) for _ in range(n)]
        eos = getattr(self.tokenizer, "eos_id", None)
        for step in steps:
            for text, token in zip(texts, step.tokens.tolist(), strict=True):
                if token == eos:
                    text.stopped = True
                text.push(token)
            if all(t.stopped for t in texts):
                break
        return [t.text for t in texts]

    def _pieces(self, prompt, max_tokens, temperature, top_k, top_p, penalty, stop, seed, cache, drop_unknown):
        # checked now, not at the first next(): a bad request fails before anything is streamed
        sampling = Sampling(temperature, top_k, top_p, penalty).check()
        check_max_tokens(max_tokens)
        ids = torch.tensor([self.encode_prompt(prompt, drop_unknown)], device=self.device)
        return self._stream(ids, max_tokens, sampling, _stops(stop), seed, cache)

    def _stream(self, ids, max_tokens, sampling, stop, seed, cache) -> Iterator[str]:
        text = TextAssembler(self.tokenizer.decode, stop)
        eos = getattr(self.tokenizer, "eos_id", None)
        for step in sample_steps(self.model, ids, max_tokens, sampling, self._rng(seed), cache):
            token = int(step.tokens[0])
            if token == eos:
                break
            piece = text.push(token)
            if piece:
                yield piece
            if text.stopped:
                return
        rest = text.finish()
        if rest:
            yield rest

    def _rng(self, seed: int | None) -> torch.Generator:
        rng = torch.Generator(self.device)
        if seed is None:
            rng.seed()
        else:
            rng.manual_seed(seed)
        return rng


def _stops(stop: Sequence[str] | str) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop)
