"""`keel generate`: text streamed to the terminal, the same as the API's, and one-line errors."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SRC, assert_one_line_error, keel
from lm_helpers import corpus_spec, one_torch_thread, write_run  # noqa: F401 (a fixture)

from torchkeel import Generator
from torchkeel.data.bundle import DataSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("cli") / "lm-run", corpus_spec(block=16))


def test_generate_prints_the_prompt_and_the_apis_continuation(char_run, tmp_path):
    proc = keel("generate", str(char_run), "--prompt", "ROMEO:", "--max-tokens", "30", "--seed", "7",
                "--temperature", "0.8", "--top-k", "20", "--top-p", "0.95", "--repetition-penalty", "1.1",
                "--no-cache", cwd=tmp_path, check=True)  # fmt: skip
    expected = Generator.from_run(char_run).generate(
        "ROMEO:", max_tokens=30, seed=7, temperature=0.8, top_k=20, top_p=0.95, repetition_penalty=1.1
    )
    assert proc.stdout == "ROMEO:" + expected + "\n"


def test_generate_streams_text_before_it_is_done(char_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torchkeel", "generate", str(char_run), "--max-tokens", "10000", "--seed", "0"]
    with subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            first = proc.stdout.read1(64)  # whatever has been flushed so far
            assert first and proc.poll() is None  # text arrived while the model is still generating
        finally:
            proc.kill()


def test_a_non_language_model_run_is_refused_naming_the_right_command(tmp_path):
    table = DataSpec("t", "table", "classification", (4,), classes=["a", "b", "c"])
    run = write_run(tmp_path / "clf", table, {"name": "mlp"})
    proc = keel("generate", str(run), "--prompt", "hi", cwd=tmp_path)
    assert_one_line_error(proc, "clf is a classification run, not a language model", "keel predict")


def test_prompt_characters_outside_the_vocabulary_are_named(char_run, tmp_path):
    proc = keel("generate", str(char_run), "--prompt", "naïve 42", cwd=tmp_path)
    assert_one_line_error(proc, "3 character(s) outside this model's 61-character vocabulary: '2', '4', 'ï'",
                          "--drop-unknown")  # fmt: skip


@pytest.mark.slow
def test_drop_unknown_generates_from_the_rest(char_run, tmp_path):
    dropped = keel("generate", str(char_run), "--prompt", "naïve 42", "--drop-unknown", "--max-tokens", "5",
                   cwd=tmp_path, check=True)  # fmt: skip
    assert dropped.stdout.startswith("naïve 42") and len(dropped.stdout) == len("naïve 42") + 5 + 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-tokens", "20000"], "max tokens must be between 1 and 10,000 (got 20,000)"),
        pytest.param(["--max-tokens", "0"], "max tokens must be between 1 and 10,000", marks=pytest.mark.slow),
        pytest.param(["--temperature", "0"], "temperature must be > 0", marks=pytest.mark.slow),
        pytest.param(["--top-p", "1.5"], "top-p must be in (0, 1]", marks=pytest.mark.slow),
    ],
)
def test_bad_sampling_options_are_one_line(char_run, tmp_path, args, message):
    assert_one_line_error(keel("generate", str(char_run), *args, cwd=tmp_path), message)


@pytest.mark.slow
def test_train_generate_and_export_a_bpe_language_model_on_a_text_file(tmp_path):
    from rich.console import Console

    from torchkeel.config import load_config
    from torchkeel.experiment import train
    from torchkeel.export import export_run

    text = "".join(f"line {i % 17} of the play, said {'ROMEO' if i % 3 else 'JULIET'}.\n" for i in range(400))
    (tmp_path / "play.txt").write_text(text, encoding="utf-8")
    options = [f"data.path={tmp_path / 'play.txt'}", f"out_dir={tmp_path / 'runs'}", "train.epochs=2",
               "data.corpus.tokenizer=bpe", "data.corpus.vocab_size=300", "data.corpus.block_size=32",
               "data.corpus.steps_per_epoch=20", "data.corpus.eval_windows=20", "model.n_layer=1",
               "model.n_embd=32", "model.n_head=2", "train.threads=1"]  # fmt: skip
    run = train(load_config(ROOT / "configs" / "text_file.yaml", options), Console(file=io.StringIO()), progress=False)
    proc = keel("generate", str(run), "--prompt", "line 3 of", "--max-tokens", "40", "--seed", "0",
                "--stop", "\n", cwd=tmp_path, check=True)  # fmt: skip
    assert proc.stdout.startswith("line 3 of") and proc.stdout.count("\n") == 1  # stopped at the line's end
    result = export_run(run, "onnx")
    assert result.input_source == "the test split" and len(set(result.prompt_lengths)) >= 2


def test_the_cli_with_generate_registered_imports_no_torch():
    code = "import sys, torchkeel.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)}, check=True)
