"""The tasks (tasks/): every registered task is complete and consistent; two-class data get
ROC-AUC and PR-AUC end to end; run folders written before tasks were objects still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import keel

from torchkeel.data.bundle import DataSpec
from torchkeel.data.kinds import KINDS
from torchkeel.tasks import TASKS, all_metrics, lower_is_better, task_of
from torchkeel.tasks.base import USES

BEFORE = Path(__file__).parent / "data" / "runs_before_tasks"  # made by the code before this change


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_is_complete(name):
    task = TASKS[name]
    assert task.name == name and task.losses and task.key_metric in {*task.metrics, "loss"}
    assert task.uses <= set(USES), task.uses - set(USES)
    assert task.lower_is_better <= {*task.metrics, "loss", "d_loss", "g_loss"}
    spec = DataSpec(
        "t", "table", name, (3,), classes=["a", "b", "c"], targets=2, extra={"vocab_size": 3, "alphabet": "a"}
    )
    spec.extra["target_vocab_size"] = 3
    assert task.output_size(spec) in (1, 2, 3)
    if task.name == "translation":  # its outputs need a real tokeniser: test_translation_task_is_complete
        return
    if task.loop == "fit":  # supervised: a loss, a meter, an accumulator (and a decoder for predict)
        assert task.accumulator is not None and task.train_meter is not None
        assert (task.decode is not None) == ("predict" in task.uses)
        out, y = _outputs_and_targets(task, spec)
        if task.eval_loss:
            loss = task.build_loss(task.losses[0], spec)(out, y)
        else:  # the model computes its loss in training (a detector): the task passes it the targets
            _, loss = task.forward_loss(lambda x, targets: sum(t["boxes"].sum() for t in targets), out, y, None)
            assert loss == y.values[:, 1:5].sum()
        assert loss.ndim == 0 and torch.isfinite(loss)
        acc = task.accumulator(spec, list(task.metrics), torch.device("cpu"), 3, details=True)
        acc.update(out, y, loss if task.eval_loss else None)
        computed = acc.compute()
        assert set(computed) >= ({"loss"} if task.eval_loss else {task.key_metric})
        if task.decode is not None:
            assert len(task.decode(out, spec, 2)) == 4
    else:
        for use in ("predict", "export", "eval"):
            with pytest.raises(Exception, match="cannot"):
                task.require(use, "run")


def test_translation_task_is_complete(tmp_path):
    """Teacher-forced logits for the loss; logits, decoded ids and sources for the metrics; ids
    for predictions, on a real tokeniser."""
    from pairs_helpers import invented_pairs, pairs_config, write_tsv

    from torchkeel.data import load
    from torchkeel.tasks.translate import Translated

    task, spec = TASKS["translation"], load(pairs_config(write_tsv(tmp_path / "p.tsv", invented_pairs(50)))).spec
    logits, y = torch.randn(4, 5, task.output_size(spec)), torch.randint(4, 40, (4, 6))
    y[:, 0], y[:, -1], y[0, 3:] = 2, 3, 0
    loss = task.build_loss(task.losses[0], spec)(logits, y[:, 1:])
    assert loss.ndim == 0 and torch.isfinite(loss)
    acc = task.accumulator(spec, list(task.metrics), torch.device("cpu"), 3, details=True)
    acc.update(Translated(logits, y[:, 1:4], y[:, 1:]), y, loss)
    assert set(acc.compute()) >= {"loss", *task.metrics}
    assert len(acc.details()["translations"]) == 4
    assert [set(p) for p in task.decode(y[:, 1:4], spec, 2)] == [{"translation"}] * 4


def _outputs_and_targets(task, spec):
    """A batch of 4 outputs and targets as the task defines them."""
    if task.name == "language_model":  # (B, T, vocab) logits and (B, T) next tokens
        return torch.randn(4, 5, 3), torch.randint(0, 3, (4, 5))
    if task.name == "speech_recognition":  # (B, frames, blank + alphabet + mask), a transcript each
        from torchkeel.data.ragged import Ragged

        out = torch.randn(4, 6, task.output_size(spec))
        out[..., -1] = 1.0
        return out, Ragged.from_list([torch.ones(n, dtype=torch.int64) for n in (1, 2, 0, 3)])
    if task.boxes:  # (B, D, 6) rows of box, score, class (-1: none), and each image's (n, 6) boxes
        from torchkeel.data.ragged import Ragged

        out = torch.tensor([[10.0, 10, 30, 30, 0.9, 1], [0, 0, 0, 0, 0, -1]]).repeat(4, 1, 1)
        truth = [torch.tensor([[1.0, 10, 10, 30, 30, 0]])] * 3 + [torch.zeros(0, 6)]
        return out, Ragged.from_list(truth)
    if task.dense:  # (B, K, H, W) logits and (B, H, W) class masks with void pixels
        y = torch.randint(0, 3, (4, 5, 6))
        y[0, 0] = 255
        return torch.randn(4, task.output_size(spec), 5, 6), y
    out = torch.randn(4, task.output_size(spec))
    y = torch.randint(0, 2, (4,)).float() if task.name == "binary" else torch.randint(0, 3, (4,))
    return out, torch.randn(4, 2) if task.predict_index is None else y


def test_metric_directions_and_names_come_from_the_tasks():
    assert lower_is_better("val/rmse") and lower_is_better("frechet") and not lower_is_better("val/accuracy")
    assert set(all_metrics()) >= {"accuracy", "roc_auc", "r2", "frechet"}
    assert {k.name for k in KINDS.values()} == set(KINDS)


def test_a_two_valued_csv_column_reports_roc_auc(tmp_path):
    """A yes/no target trains two-logit classification; summary.json and the report carry
    ROC-AUC and PR-AUC without asking (and eval.metrics does not list them)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=g)
    label = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * torch.randn(300, generator=g)) > 0
    answers = ["yes" if t else "no" for t in label.tolist()]
    rows = ["a,b,c,default"] + [
        f"{a:.4f},{b:.4f},{c:.4f},{t}" for (a, b, c), t in zip(x.tolist(), answers, strict=True)
    ]
    (tmp_path / "loans.csv").write_text("\n".join(rows) + "\n")
    keel("train", "--data", "csv", "--set", "data.path=loans.csv", "--set", "data.target=default", "--epochs", "3",
         "--set", "train.threads=1", "-q", cwd=tmp_path, check=True)  # fmt: skip
    run = (tmp_path / "runs" / "latest").resolve()
    test = json.loads((run / "summary.json").read_text())["test"]
    assert 0.8 < test["roc_auc"] <= 1.0 and 0.7 < test["pr_auc"] <= 1.0, test
    assert "ROC-AUC" in (run / "report.html").read_text(encoding="utf-8")
    listed = keel("runs", cwd=tmp_path, check=True).stdout
    assert "roc_auc" in listed


@pytest.fixture
def before(tmp_path: Path) -> Path:
    shutil.copytree(BEFORE, tmp_path / "runs")
    return tmp_path


def test_runs_from_before_the_tasks_still_evaluate(before):
    for name in ("iris-mlp", "breast_cancer-mlp"):
        metrics = json.loads(keel("eval", name, "--json", cwd=before, check=True).stdout)
        saved = json.loads((before / "runs" / name / "summary.json").read_text())["test"]
        assert metrics["accuracy"] == pytest.approx(saved["accuracy"]), name


def test_runs_from_before_the_tasks_still_predict_and_serve(before):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from torchkeel.serve.app import create_app
    from torchkeel.serve.predictor import Predictor

    binary = Predictor.from_run(before / "runs" / "breast_cancer-mlp")
    assert binary.task.name == "binary"
    iris = Predictor.from_run(before / "runs" / "iris-mlp")
    features = iris.spec.extra["table"]["features"]
    import pandas as pd

    [prediction] = iris.predict_rows(pd.DataFrame([dict.fromkeys(features, 1.0)]))
    assert len(prediction.top) == 3 and abs(sum(p for _, p in prediction.top) - 1) < 1e-5
    with TestClient(create_app(before / "runs" / "iris-mlp")) as client:
        reply = client.post("/predict", json={"rows": [dict.fromkeys(features, 1.0)]})
        assert reply.status_code == 200, reply.text
    with TestClient(create_app(before / "runs" / "digits-dcgan")) as client:  # a GAN: the generate server
        assert client.get("/health").status_code == 200


def test_a_gan_run_from_before_the_tasks_is_still_a_gan(before):
    from torchkeel.run_model import load_model

    _, spec, _ = load_model(before / "runs" / "digits-dcgan")
    assert task_of(spec).loop == "gan"
    proc = keel("predict", "digits-dcgan", "x.png", cwd=before)
    assert proc.returncode == 2 and "keel sample" in proc.stderr
    keel("sample", "digits-dcgan", "--n", "4", "--out", "grid.png", cwd=before, check=True)
    assert (before / "grid.png").stat().st_size > 0


def test_a_task_with_its_own_loop_refuses_nproc(tmp_path):
    from conftest import assert_one_line_error

    assert_one_line_error(keel("train", "--model", "dcgan", "--nproc", "2", cwd=tmp_path), "drop --nproc")
    assert not (tmp_path / "runs").exists()
