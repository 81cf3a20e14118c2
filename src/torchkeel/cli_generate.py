"""``keel generate``: text from a trained language model, streamed to the terminal as it is made.
Registered in cli.py; torch is imported only when the command runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from torchkeel.cli_evaluate import ModelCodeOpt, OutDirOpt, RunArg


def generate(
    run: RunArg = "latest",
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="Text to continue; empty: start from the start-of-text token.")
    ] = "",
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="New tokens to generate (1 to 10,000).")] = 500,
    temperature: Annotated[float, typer.Option(help="> 0: below 1 sharper, above 1 more varied.")] = 1.0,
    top_k: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--top-k", help="Sample only from the k most likely tokens (1: greedy)."),
    ] = None,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling, in (0, 1]; 1 keeps all tokens.")] = 1.0,
    repetition_penalty: Annotated[
        float, typer.Option("--repetition-penalty", help=">= 1: make tokens already in the text less likely.")
    ] = 1.0,
    stop: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--stop", help="End at this string, which is not printed (repeatable)."),
    ] = None,
    seed: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Seed of the sampling: the same seed gives the same text (default: random)."),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Recompute the whole context every step (slower; the same text).")
    ] = False,
    drop_unknown: Annotated[
        bool,
        typer.Option("--drop-unknown", help="Leave out prompt characters the model's vocabulary lacks."),
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps.")] = "cpu",
    out_dir: OutDirOpt = Path("runs"),
    model_code: ModelCodeOpt = None,
) -> None:
    """Generate text from a language-model run, printing it as it is produced.

    The prompt is printed first, then its continuation. Stops after --max-tokens tokens, at a
    --stop string or at the model's end-of-text token.
    """
    from torchkeel.generation import Generator
    from torchkeel.runs import resolve_run
    from torchkeel.train.runtime import pick_device, set_threads
    from torchkeel.train.threads import decode_threads

    run_dir = resolve_run(run, out_dir)
    generator = Generator.from_run(run_dir, model_code, pick_device(device))
    set_threads(decode_threads(generator.model))
    pieces = generator.generate(
        prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        stop=stop or (),
        seed=seed,
        stream=True,
        cache=not no_cache,
        drop_unknown=drop_unknown,
    )  # every option is checked here, before anything is printed
    sys.stdout.write(prompt)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
