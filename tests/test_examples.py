import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import SRC

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_cnn_example_trains(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tutorial_cnn.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", proc.stdout).group(1))
    assert accuracy > 0.95
