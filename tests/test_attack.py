"""FGSM and PGD in pixel space on a trained digits model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, keel

from torchkeel.evaluate.attack import fgsm, pgd, robustness
from torchkeel.evaluate.explain import pixels
from torchkeel.experiment import load_model, load_run_config, prepare_data
from torchkeel.train.losses import build_loss


@pytest.fixture(scope="module")
def digits_model(trained_run: Path):
    model, spec, meta = load_model(trained_run)
    data = prepare_data(load_run_config(trained_run))
    return model, spec, data, build_loss(meta["loss"])


def test_fgsm_lowers_accuracy_and_eps_0_changes_nothing(digits_model):
    model, spec, data, loss_fn = digits_model
    clean = robustness(model, data.test, spec, loss_fn, "fgsm", 0.0)
    assert clean["adversarial_accuracy"] == clean["clean_accuracy"] > 0.9
    x, y = data.test.x[:64], data.test.y[:64]
    torch.testing.assert_close(fgsm(model, x, y, 0.0, spec, loss_fn), x, atol=1e-5, rtol=0)
    attacked = robustness(model, data.test, spec, loss_fn, "fgsm", 0.1)
    assert attacked["clean_accuracy"] == clean["clean_accuracy"]
    assert attacked["adversarial_accuracy"] < clean["clean_accuracy"] - 0.15


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_perturbation_stays_in_the_budget_and_valid_pixels(digits_model, method):
    model, spec, data, loss_fn = digits_model
    x, y = data.test.x[:64], data.test.y[:64]
    eps = 0.08
    if method == "fgsm":
        x_adv = fgsm(model, x, y, eps, spec, loss_fn)
    else:
        x_adv = pgd(model, x, y, eps, spec, loss_fn, steps=5, generator=torch.Generator().manual_seed(0))
    p, p_adv = pixels(x, spec), pixels(x_adv, spec)
    assert float((p_adv - p).abs().max()) <= eps + 1e-5
    assert float(p_adv.min()) >= -1e-5 and float(p_adv.max()) <= 1 + 1e-5


def test_pgd_is_at_least_as_strong_as_fgsm(digits_model):
    model, spec, data, loss_fn = digits_model
    one_step = robustness(model, data.test, spec, loss_fn, "fgsm", 0.05)
    iterated = robustness(model, data.test, spec, loss_fn, "pgd", 0.05, steps=10)
    assert iterated["adversarial_accuracy"] <= one_step["adversarial_accuracy"] + 0.01


def test_eval_attack_cli_records_results(trained_run: Path, tmp_path: Path):
    from eval_helpers import copy_run

    run = copy_run(trained_run, tmp_path)
    args = ("--attack", "pgd", "--eps", "0.05", "--steps", "3", "--json")
    proc = keel("eval", str(run), *args, cwd=tmp_path, check=True)
    result = json.loads(proc.stdout)
    assert result["method"] == "pgd" and result["steps"] == 3
    assert result["adversarial_accuracy"] < result["clean_accuracy"]
    recorded = json.loads((run / "robustness.json").read_text())["results"]
    assert recorded == [{"split": "test", **{k: v for k, v in result.items() if k not in ("run", "split")}}]
    assert 'id="robustness"' in (run / "report.html").read_text()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--attack", "fgsn"], "did you mean 'fgsm'"), (["--attack", "fgsm", "--eps", "3"], "--eps must be in [0, 1]")],
)
def test_eval_attack_bad_input(trained_run: Path, tmp_path: Path, args, fragment):
    assert_one_line_error(keel("eval", str(trained_run), *args, cwd=tmp_path), fragment)
