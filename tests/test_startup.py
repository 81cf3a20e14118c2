"""What `keel` costs before and around its work: the phase timer (`keel train --profile`) and
the heavy modules each command imports (a slow import must not come back unnoticed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from torchkeel import phases

SRC = Path(__file__).resolve().parents[1] / "src"
# the libraries whose import costs a tenth of a second or more (benchmarks/RESULTS.md): those the
# phase timer shows on their own lines, and the CLI's own
HEAVY = (*phases.HEAVY, "typer", "rich")
# runs the CLI and prints the heavy modules loaded when the process exits
HARNESS = (
    "import atexit, json, sys\n"
    "heavy = {heavy!r}\n"
    "atexit.register(lambda: print('MODULES', json.dumps(sorted(m for m in heavy if m in sys.modules))))\n"
    "sys.argv = ['keel', *{args!r}]\n"
    "from torchkeel.cli import main\n"
    "main()\n"
)
TRAINING = {"torch", "numpy", "pydantic", "yaml", "safetensors", "typer", "rich"}
# captum only for tables and texts (integrated gradients): the images' saliency and Grad-CAM are
# computed in torch (evaluate/explain.py); the charts are SVG written out (evaluate/charts.py), so
# matplotlib is not imported, PIL only for the image mosaics
REPORT = {"PIL"}


def _modules(*args: str, cwd: Path) -> set[str]:
    code = HARNESS.format(heavy=HEAVY, args=list(args))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def test_help_imports_only_the_cli_libraries(tmp_path):
    assert _modules("--help", cwd=tmp_path) == {"typer", "rich"}


def test_the_default_job_without_report_imports_what_training_needs(tmp_path):
    args = ("train", "-q", "--epochs", "1", "--out-dir", str(tmp_path), "--set", "eval.report=false")
    assert _modules(*args, cwd=tmp_path) == TRAINING


def test_profile_phases_add_up_to_the_process_wall_time(tmp_path):
    """`keel train --profile` on digits (report.html included): the named phases cover the
    process's wall time to within 10%, and that time is the process's own (started by the kernel
    when the subprocess was spawned, so at most the wall time measured from outside)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = HARNESS.format(heavy=HEAVY, args=["train", "-q", "--profile", "--epochs", "1", "--out-dir", str(tmp_path)])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    outside = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert "Where the time went" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES "))
    assert set(json.loads(line.removeprefix("MODULES "))) == TRAINING | REPORT
    (profile,) = {p.resolve() for p in tmp_path.glob("*/profile.json")}  # and the latest link
    seconds = json.loads(profile.read_text())["seconds"]
    total = seconds.pop("total (process wall time)")
    other = seconds.pop("other")
    named = sum(seconds.values())
    assert abs(named - total) <= 0.1 * total, seconds
    assert abs(other) <= 0.1 * total
    assert 0.5 * outside < total <= outside + 0.02  # /proc's start time has 10 ms ticks
    for phase in ("data", "model build", "training", "evaluation", "report", "import torch"):
        assert seconds[phase] > 0, phase
    assert all(v >= 0 for v in seconds.values()), seconds


def test_a_language_model_without_report_imports_what_training_needs(tmp_path):
    """The model is sized on the meta device first (train/footprint.py): an embedding's
    initialiser must not pull torch._dynamo and sympy in there."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 40, encoding="utf-8")
    sets = ["data.path=corpus.txt", "data.corpus.block_size=16", "data.corpus.steps_per_epoch=3", "eval.report=false"]
    args = ("train", "-q", "--data", "text_file", "--epochs", "1", "--out-dir", str(tmp_path / "runs"))
    assert _modules(*args, *(a for s in sets for a in ("--set", s)), cwd=tmp_path) == TRAINING


def test_the_collector_is_left_alone_until_the_interpreter_exits(tmp_path):
    """`main` registers the exit-time gc.freeze (cli._leave_objects_to_the_os) as an atexit
    handler: a process that calls main and goes on keeps its collector; at exit the objects are
    frozen, so the interpreter's last collections skip them."""
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('AT EXIT', gc.isenabled(), gc.get_freeze_count() > 0))\n"
        "sys.argv = ['keel', '--help']\n"
        "from torchkeel.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('AFTER MAIN', gc.isenabled(), gc.get_freeze_count())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "AFTER MAIN True 0" in proc.stdout and proc.stdout.rstrip().endswith("AT EXIT False True"), proc.stdout
