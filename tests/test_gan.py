"""DCGAN: the Fréchet distance against scipy, the GAN loop on digits, its checkpoints and
exact resume, keel sample."""

import io
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import scipy.linalg
import torch
from conftest import assert_one_line_error, keel
from PIL import Image
from rich.console import Console

import torchkeel as keel_pkg
from torchkeel.data.bundle import DataSpec
from torchkeel.errors import RunError, TrainingInterrupted
from torchkeel.evaluate.frechet import frechet_distance
from torchkeel.experiment import evaluate_run, load_run_config, save_model, train
from torchkeel.train import checkpoint as ckpt
from torchkeel.train.gan import feature_classifier, fit_gan, from_tanh_range, grid_png, to_tanh_range
from torchkeel.train.gan_sample import sample_png
from torchkeel.train.signals import StopSignals


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's calculate_frechet_distance: scipy's general matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 12)) @ rng.normal(size=(12, 12))
    b = rng.normal(0.3, 1.5, size=(400, 12)) @ rng.normal(size=(12, 12))
    expected = _scipy_frechet(a, b)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(a)) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_1d_gaussians_is_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 1, generator=g, dtype=torch.float64) * 2 + 1
    b = torch.randn(200_000, 1, generator=g, dtype=torch.float64) * 0.5 - 1
    # (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2 = 4 + 2.25
    assert frechet_distance(a, b) == pytest.approx(6.25, rel=0.01)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_pixels_go_to_tanh_range_and_back(shape):
    spec = DataSpec(
        "x", "image", "classification", shape, classes=["a", "b"], mean=[0.3] * shape[0], std=[0.2] * shape[0]
    )
    pixels01 = torch.rand(5, *shape)
    normalised = (pixels01 - 0.3) / 0.2
    tanh = to_tanh_range(normalised, spec)
    torch.testing.assert_close(tanh, pixels01 * 2 - 1)
    torch.testing.assert_close(from_tanh_range(tanh, spec), normalised)


def test_grid_png_is_a_png_of_the_right_size():
    png = grid_png(torch.rand(10, 1, 8, 8) * 2 - 1, nrow=5)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "L"
    assert image.size == (5 * 10 + 2, 2 * 10 + 2)  # 8 px + 2 px padding per cell, plus the border
    colour = Image.open(io.BytesIO(grid_png(torch.zeros(3, 3, 32, 32))))
    assert colour.mode == "RGB"


@pytest.fixture(scope="module")
def digits():
    return keel_pkg.data.load("digits")


def test_gan_frechet_distance_falls_on_digits(digits, tmp_path):
    cfg = keel_pkg.load_config(None, ["train.threads=1"])
    features, accuracy = feature_classifier(digits, cfg)
    assert accuracy > 0.9  # the feature space is a classifier that knows digits
    torch.manual_seed(0)
    gan = keel_pkg.models.build({"name": "dcgan", "width": 32}, digits.spec)
    run = fit_gan(gan, digits, cfg, feature_net=features, run_dir=tmp_path, epochs=12, batch_size=64, progress=False)
    first, last = run.history[0]["frechet"], run.history[-1]["frechet"]
    assert last < 0.5 * first, [r["frechet"] for r in run.history]
    assert run.frechet_real < last  # real-vs-real is the floor
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [f"epoch-{e:03d}.png" for e in range(1, 13)]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 13))
    assert {"frechet", "train/d_loss", "train/g_loss", "train/D(x)", "train/D(G(z))"} <= set(records[0])


def test_conditional_gan_generates_the_asked_class(digits):
    spec = digits.spec
    torch.manual_seed(0)
    gan = keel_pkg.models.build({"name": "dcgan", "conditional": True, "width": 16}, spec)
    assert gan.classes == 10
    labels = torch.tensor([3, 3, 7])
    images = gan(gan.noise(3), labels)
    assert images.shape == (3, 1, 8, 8)
    logits = gan.discriminator(images, labels)
    assert logits.shape == (3,)
    # the label changes what is generated from the same noise
    z = gan.noise(1).repeat(2, 1)
    two = gan.eval()(z, torch.tensor([0, 9]))
    assert not torch.allclose(two[0], two[1])
    with pytest.raises(ValueError, match="give labels"):
        gan(gan.noise(2))


def test_conditional_gan_trains_and_samples_one_class(digits, tmp_path):
    cfg = keel_pkg.load_config(
        None, ["model.name=dcgan", "model.conditional=true", "model.width=16", "train.threads=1"]
    )
    torch.manual_seed(0)
    gan = keel_pkg.models.build(cfg.model, digits.spec)
    features = torch.nn.Sequential(torch.nn.Flatten())  # raw pixels: this test checks the loop runs with labels
    run = fit_gan(gan, digits, cfg, feature_net=features, epochs=1, batch_size=64, progress=False)
    assert run.history[0]["train/d_loss"] > 0 and np.isfinite(run.history[0]["frechet"])
    save_model(tmp_path, gan, cfg, digits.spec, loss="adversarial")
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    grid = Image.open(io.BytesIO(sample_png(tmp_path, 10, label=3, nrow=5)))
    assert grid.size == (5 * 10 + 2, 2 * 10 + 2)
    with pytest.raises(RunError, match="class index 0..9"):
        sample_png(tmp_path, 4, label=10)


def test_gan_resumes_mid_epoch_to_identical_weights_and_history(digits, tmp_path):
    """A conditional GAN (its fake labels come from the global RNG too), checkpointed every 5
    steps, resumed from a mid-epoch checkpoint into a differently initialised GAN: the same
    weights, bit for bit, and the same per-epoch records as the run never stopped."""
    settings = ["model.name=dcgan", "model.conditional=true", "model.width=16", "train.threads=1"]
    cfg = keel_pkg.load_config(None, [*settings, "train.gan.frechet_samples=64", "train.gan.grid=16"])
    options = {"epochs": 2, "batch_size": 64, "progress": False}
    options["checkpoint"] = {"every_steps": 5, "min_seconds": 3600, "keep": 100}  # 19 steps per epoch

    def gan(seed):
        torch.manual_seed(seed)
        return keel_pkg.models.build(cfg.model, digits.spec)

    features = torch.nn.Flatten()
    full = fit_gan(gan(0), digits, cfg, feature_net=features, run_dir=tmp_path, **options)
    saved = ckpt.list_checkpoints(tmp_path / "checkpoint")
    assert [int(p.stem.split("-")[1]) for p in saved] == [5, 10, 15, 20, 25, 30, 35, 38]
    mid = ckpt.read_checkpoint(saved[2])  # step 15, epoch 1
    assert {"optim.discriminator.0.exp_avg", "optim.generator.0.exp_avg", "extra.meter.totals"} <= mid.tensors.keys()
    resumed = fit_gan(gan(1), digits, cfg, feature_net=features, resume=mid, **options)
    _assert_same_weights(full.model, resumed.model)

    def without_seconds(history):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert without_seconds(resumed.history) == without_seconds(full.history)

    # Ctrl-C during the generator's 12th training forward pass: that step ends with a checkpoint, exit code 130
    stopped_dir, signalled, calls = tmp_path / "stopped", gan(0), []  # the same start as full

    def interrupt(*_):  # a forward pre-hook: returns None, so the inputs pass unchanged
        calls.append(1)
        if len(calls) == 12:
            os.kill(os.getpid(), signal.SIGINT)

    signalled.generator.register_forward_pre_hook(interrupt)
    with pytest.raises(TrainingInterrupted) as stopped, StopSignals() as stop:
        fit_gan(signalled, digits, cfg, feature_net=features, run_dir=stopped_dir, stop=stop, **options)
    assert stopped.value.exit_code == 130 and "by SIGINT at step 12 " in str(stopped.value)
    again = fit_gan(gan(3), digits, cfg, feature_net=features, resume=stopped_dir / "checkpoint", **options)
    _assert_same_weights(full.model, again.model)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert without_seconds(records) == without_seconds(full.history)  # written with the last checkpoint


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k  # bit for bit


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("gan")
    keel(
        "train", "--model", "dcgan", "--epochs", "2", "--set", "model.width=16", "--set", "train.threads=1",
        "--set", "train.gan.classifier_epochs=1", "--set", "train.gan.grid=16", "-q", cwd=cwd, check=True,
    )  # fmt: skip
    return (cwd / "runs" / "latest").resolve()


def test_keel_train_runs_the_gan_loop(gan_run):
    for name in ("config.yaml", "env.json", "metrics.jsonl", "model.safetensors", "model.json", "summary.json"):
        assert (gan_run / name).is_file(), name
    assert [p.name for p in sorted((gan_run / "samples").iterdir())] == ["epoch-001.png", "epoch-002.png"]
    summary = json.loads((gan_run / "summary.json").read_text())
    assert summary["test"]["frechet"] > 0 and summary["epochs"] == 2
    assert json.loads((gan_run / "model.json").read_text())["loss"] == "adversarial"
    import yaml

    config = yaml.safe_load((gan_run / "config.yaml").read_text())
    assert config["train"]["gan"]["lr"] == 2e-4 and config["train"]["gan"]["betas"] == [0.5, 0.999]


def test_keel_sample_writes_a_grid(gan_run):
    out = gan_run.parent.parent / "grid.png"
    proc = keel("sample", str(gan_run), "--n", "12", "--out", str(out), "--nrow", "4", cwd=gan_run.parent.parent)
    assert proc.returncode == 0, proc.stderr
    image = Image.open(out)
    assert image.size == (4 * 10 + 2, 3 * 10 + 2) and image.mode == "L"
    assert sample_png(gan_run, 12, seed=0, nrow=4) == out.read_bytes()  # same seed, same grid
    assert sample_png(gan_run, 12, seed=1, nrow=4) != out.read_bytes()
    # the grid is not replaced without --force, and the run's own files never are
    again = keel("sample", str(gan_run), "--out", str(out), "--seed", "1", cwd=gan_run.parent.parent)
    assert_one_line_error(again, "already exists", "--force")
    assert sample_png(gan_run, 12, seed=0, nrow=4) == out.read_bytes()
    weights = gan_run / "model.safetensors"
    over = keel("sample", str(gan_run), "--out", str(weights), "--force", cwd=gan_run.parent.parent)
    assert_one_line_error(over, "is an input")


def test_gan_run_errors(gan_run, trained_run):
    assert_one_line_error(keel("sample", str(trained_run), cwd=gan_run.parent.parent), "not a GAN")
    with pytest.raises(RunError, match="not class-conditional"):
        sample_png(gan_run, 4, label=3)
    with pytest.raises(RunError, match="is a GAN run"):
        evaluate_run(gan_run)
    with pytest.raises(RunError, match="has finished"):
        train(load_run_config(gan_run), Console(quiet=True), resume=str(gan_run))


def test_keel_train_resume_continues_a_gan_run(gan_run, tmp_path):
    """The finished run copied and unfinished: `--resume` takes its last checkpoint (both
    networks, both optimisers) and ends with the same weights and Frechet distance."""
    run = tmp_path / gan_run.name
    shutil.copytree(gan_run, run)
    for name in ("summary.json", "model.safetensors", "model.json"):
        (run / name).unlink()
    out = io.StringIO()
    train(load_run_config(run), Console(file=out, width=300), resume=str(run), progress=False)
    assert f"resuming {run.name} from step-" in out.getvalue()
    before = safetensors.torch.load_file(str(gan_run / "model.safetensors"))
    after = safetensors.torch.load_file(str(run / "model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"] == json.loads((gan_run / "summary.json").read_text())["test"]


def test_gan_run_gets_its_report_and_refuses_predict_and_export(gan_run):
    report = (gan_run / "report.html").read_text()
    assert "Fr" in report and "data:image/png;base64," in report  # the GAN section: grids and the curve
    assert "confusion" not in report.lower()  # no test-split sections for a generator
    cwd = gan_run.parent.parent
    digit = cwd / "digit.png"
    Image.new("L", (8, 8)).save(digit)
    refused = (("predict", str(gan_run), str(digit)), ("export", str(gan_run)), ("explain", str(gan_run), str(digit)))
    for args in refused:
        assert_one_line_error(keel(*args, cwd=cwd), "is a GAN run")


def test_keel_serve_generates_grids_for_a_gan_run(gan_run, tmp_path):
    import httpx
    from serving import running_server

    with running_server(gan_run, log_dir=tmp_path) as url:
        first = httpx.post(f"{url}/predict", json={"n": 6, "seed": 3, "nrow": 3}, timeout=30)
        assert first.status_code == 200 and first.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(first.content)).size == (3 * 10 + 2, 2 * 10 + 2)
        again = httpx.post(f"{url}/predict", json={"n": 6, "seed": 3, "nrow": 3}, timeout=30)
        other = httpx.post(f"{url}/predict", json={"n": 6, "seed": 4, "nrow": 3}, timeout=30)
        assert again.content == first.content and other.content != first.content
        assert sample_png(gan_run, 6, seed=3, nrow=3) == first.content  # what `keel sample` draws
        default = httpx.post(f"{url}/predict", timeout=30)  # no body: 16 images, seed 0
        assert Image.open(io.BytesIO(default.content)).size == (8 * 10 + 2, 2 * 10 + 2)
        for body, status, words in (
            ({"label": 3}, 400, "not class-conditional"),
            ({"n": 0}, 422, "n"),
            ({"n": 4, "colour": "red"}, 422, "colour"),
        ):
            bad = httpx.post(f"{url}/predict", json=body, timeout=30)
            assert bad.status_code == status and words in bad.json()["error"], (body, bad.text)
        info = httpx.get(f"{url}/info", timeout=30).json()
        assert info["model"] == "dcgan" and info["image_shape"] == [1, 8, 8] and info["classes"] is None
        assert "Generate" in httpx.get(url, timeout=30).text
        assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
        _generate_in_chromium(url)


def _generate_in_chromium(url: str) -> None:
    """The GAN page in headless Chromium: press Generate, see the grid, no console errors."""
    from browser import chromium_page, skip_without_chromium

    skip_without_chromium()
    with chromium_page(url + "/") as (page, problems):
        page.fill("#n", "9")
        page.click("#generate")
        page.wait_for_selector("#grid:not([hidden])")
        page.wait_for_function("document.getElementById('grid').naturalWidth > 0")
        assert page.evaluate("document.getElementById('grid').naturalWidth") == 8 * 10 + 2
        assert page.is_disabled("#label")  # not class-conditional
    assert problems == []
