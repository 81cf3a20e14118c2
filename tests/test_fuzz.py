"""Hostile input, fuzzed with hypothesis: every case of every loader in fuzz_targets.TARGETS
ends in a KeelError with a readable one-line message, or in a valid result. Never another
exception, nor a hang (each case gets a time limit), nor a memory blow-up (the process's peak
memory may not grow by more than MAX_GROWTH over a target's run). The number of cases run is
printed per target (``pytest -s``) and checked."""

from __future__ import annotations

import contextlib
import resource
import signal
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, keel
from fuzz_targets import GREY, TARGETS, YAML_BOMBS, Target, huge_png
from hypothesis import HealthCheck, given, settings

from torchkeel.config import load_config
from torchkeel.errors import ConfigError, DataError, KeelError
from torchkeel.serve.predictor import load_image

CASE_SECONDS = 60  # far above any real case (milliseconds, on a busy machine): only a hang reaches it
MAX_GROWTH_MB = 1024
FAST_CASES = 60  # per target in the default run; the slow run takes SLOW_CASES
SLOW_CASES = 1500


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    def expire(signum, frame):
        raise CaseTimeout(f"one case ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def feed(target: Target, case, folder: Path) -> None:
    """One case: a KeelError with a readable message, or a result that passes the target's check."""
    try:
        with time_limit(CASE_SECONDS):
            result = target.run(case, folder)
    except KeelError as e:
        message = str(e)
        assert message and "\n" not in message and len(message) < 600, message
        assert "Traceback" not in message
        return
    target.check(result)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def fuzz(name: str, folder: Path, cases: int, derandomize: bool) -> int:
    target = TARGETS[name]
    ran = []

    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
    )
    @given(target.cases())
    def one(case):
        ran.append(case)
        feed(target, case, folder)

    before = peak_rss_mb()
    t0 = time.perf_counter()
    one()
    growth = peak_rss_mb() - before
    print(f"fuzz {name}: {len(ran)} cases passed in {time.perf_counter() - t0:.1f} s, peak memory +{growth:.0f} MB")
    assert growth < MAX_GROWTH_MB, f"{name}: peak memory grew by {growth:.0f} MB"
    assert len(ran) >= cases * 0.9, f"{name}: only {len(ran)} cases ran"
    return len(ran)


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz(name, tmp_path):
    fuzz(name, tmp_path, FAST_CASES, derandomize=True)  # the same cases on every run


@pytest.mark.slow
@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_long(name, tmp_path):
    fuzz(name, tmp_path, SLOW_CASES, derandomize=False)


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(huge_png((50_000, 50_000, 2)))  # 7.5 GB of RGB if decoded; the file is 100 bytes
    before = peak_rss_mb()
    with pytest.raises(DataError, match=r"2,500,000,000 pixels is over the limit of 40,000,000"):
        load_image(bomb, GREY)
    assert peak_rss_mb() - before < 100  # refused from the header: nothing was decoded
    small = tmp_path / "small.png"
    small.write_bytes(huge_png((4, 4, 2)))
    with pytest.raises(DataError, match="4x4 pixels is over the limit of 10 "):
        load_image(small, GREY, max_pixels=10)
    medium = tmp_path / "medium.png"
    medium.write_bytes(huge_png((10_000, 5_000, 0)))  # under Pillow's own limit: ours refuses it
    with pytest.raises(DataError, match="10000x5000 pixels is over the limit of 40,000,000"):
        load_image(medium, GREY)


def test_keel_predict_max_pixels(trained_run, tmp_path):
    image = tmp_path / "digit.png"
    image.write_bytes(huge_png((30, 20, 0)))
    proc = keel("predict", str(trained_run), str(image), "--max-pixels", "500", cwd=tmp_path)
    assert_one_line_error(proc, "30x20 pixels is over the limit of 500", "--max-pixels")


@pytest.mark.parametrize("name", YAML_BOMBS)
def test_yaml_bombs_are_config_errors(tmp_path, name):
    text, fragment = YAML_BOMBS[name]
    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=fragment), time_limit(CASE_SECONDS):
        load_config(path)
