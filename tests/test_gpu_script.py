"""benchmarks/gpu.sh's --dry-run: everything but the device checked on the CPU, on a tiny
CIFAR-10 folder in torchvision's format (the pickled batches the cifar10 loader reads)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from make_data import write_cifar10

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_bench  # noqa: E402


def _gpu_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), *args], capture_output=True, text=True)


@pytest.fixture
def cifar(tmp_path: Path) -> Path:
    write_cifar10(tmp_path / "cifar", per_batch=4, test=6)
    return tmp_path / "cifar"


def test_the_cifar10_folder_layout_is_checked(cifar):
    gpu_bench.check_cifar(cifar)
    batch = cifar / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({"data": [[0] * 3072], "labels": [0]}))  # rows, but not an array of images
    with pytest.raises(gpu_bench.CheckError, match="not a batch of 3x32x32 images"):
        gpu_bench.check_cifar(cifar)
    batch.unlink()
    with pytest.raises(gpu_bench.CheckError, match="test_batch not found in .*cifar-10-batches-py"):
        gpu_bench.check_cifar(cifar)


def test_a_missing_folder_is_one_error_line_before_anything_runs(tmp_path):
    proc = _gpu_sh("--cifar", str(tmp_path), "--dry-run")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: CIFAR-10: data_batch_1, ")


def test_every_step_s_command_is_well_formed(cifar, tmp_path):
    args = gpu_bench.parse_args(["--cifar", str(cifar), "--mnist", str(tmp_path)])
    speed = gpu_bench.speed_command(args, ["sliced", "textbook"])
    parsed = __import__("speed").build_parser().parse_args(speed[2:])
    assert parsed.device == "cuda" and parsed.workloads == ["mnist", "images", "text"] and parsed.rounds == 1
    assert parsed.cifar_root == str(cifar.resolve()) and parsed.peers == ["sliced", "textbook"]
    keel = gpu_bench.keel_command(3, cifar, tmp_path)
    assert keel[keel.index("--seed") + 1] == "3" and "train.device=cuda" in keel
    resume = gpu_bench.cuda_tests(ROOT / "tests" / "test_resume.py")
    assert resume == ["test_gpu_resume_is_bit_identical_with_deterministic"]


def test_the_speed_table_becomes_the_summary_s_ratios():
    out = "\n".join(
        [
            "### workload mnist",
            "",
            "| variant | train s | process s | CPU s | samples/s | test acc | RSS MB | train / ours | cpu |",
            "|---|---|---|---|---|---|---|---|---|",
            "| torchkeel | 1.50 (1.40-1.60) | 5 | 6 | 80,000 | 0.99 | 900 | 1.00 | 1.00 |",
            "| sliced | 1.60 (1.50-1.70) | 5 | 6 | 75,000 | 0.99 | 900 | 1.07 | 1.00 |",
        ]
    )
    assert gpu_bench.speed_ratios(out) == ["mnist; torchkeel 1.50 (1.40-1.60) s; sliced 1.07x"]
    rows = gpu_bench.summary_rows([0.941, 0.939, 0.942, 0.940, 0.943], [2.4] * 5, out, "1 passed")
    assert "mean 94.10%, min 93.90%" in rows[2] and "(met)" in rows[3] and rows[-1].endswith("| 1 passed | all pass |")


def test_dry_run_checks_everything_but_the_device(cifar, tmp_path):
    """The whole --dry-run: imports, the folder, the preset through `keel train --print-config`,
    speed.py's arguments and configs, the CUDA tests; nothing trained, no file written."""
    out = tmp_path / "table.md"
    proc = _gpu_sh("--cifar", str(cifar), "--out", str(out), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "dry run: every check passed" in proc.stdout and not out.exists()
