"""report.html: written by every `keel train`, rebuilt by `keel report`, rendered in headless
Chromium with no console errors and an image in every figure section."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import keel
from eval_helpers import copy_run, make_run, open_in_chromium, table_bundle
from PIL import Image

IMAGE_SECTIONS = {"run", "data", "curves", "lr", "confusion", "per-class", "wrong", "calibration", "saliency"}


def _check_page(report: Path, expected: set[str]) -> dict:
    page = open_in_chromium(report)
    assert page["console"] == [] and page["errors"] == [] and page["failed"] == [], page
    # self-contained: the page loads nothing but itself (images are data: URIs)
    assert all(url.startswith("data:") for url in page["requests"]), page["requests"]
    ids = [s["id"] for s in page["sections"]]
    assert expected <= set(ids), (expected - set(ids), ids)
    for s in page["sections"]:
        assert s["errors"] == 0, s
        if s["id"] != "run":  # the run section is tables of text; every other one is a figure
            assert s["kind"] == "figure" and s["images"] >= 1 and s["decoded"] == s["images"], s
    return page


def test_train_writes_report_and_it_renders(trained_run: Path, tmp_path: Path):
    run = copy_run(trained_run, tmp_path)
    proc = keel("eval", str(run), "--attack", "fgsm", "--eps", "0.05", "--eps", "0.1", cwd=tmp_path, check=True)
    assert "adversarial accuracy" in proc.stdout
    _check_page(run / "report.html", IMAGE_SECTIONS | {"robustness"})
    evaluation = json.loads((run / "evaluation.json").read_text())
    summary = json.loads((trained_run / "summary.json").read_text())
    assert evaluation["metrics"]["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    cm = np.array(evaluation["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == evaluation["size"]
    assert np.trace(cm) / cm.sum() == pytest.approx(summary["test"]["accuracy"])


def test_keel_report_rebuilds_it(trained_run: Path, tmp_path: Path):
    run = copy_run(trained_run, tmp_path)
    (run / "report.html").unlink()
    proc = keel("report", str(run), cwd=tmp_path, check=True)
    assert "report.html" in proc.stdout and (run / "report.html").stat().st_size > 20_000


@pytest.fixture(scope="module")
def table_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A regression run (diabetes) and a binary one with one logit and BCE (breast cancer)."""
    from sklearn.datasets import load_breast_cancer, load_diabetes

    out = tmp_path_factory.mktemp("tables")
    d = load_diabetes()
    reg = table_bundle(d.data, d.target, "regression", names=d.feature_names)
    mlp = {"name": "mlp", "hidden": [32]}
    reg_cfg = {"model": mlp, "train": {"epochs": 25, "optimizer": {"lr": 0.01}}, "eval": {"metrics": ["mse", "r2"]}}
    c = load_breast_cancer()
    binary = table_bundle(c.data, c.target.astype(np.float32), "binary", ["malignant", "benign"], c.feature_names)
    bin_cfg = {"model": mlp, "train": {"epochs": 8, "loss": "bce"}, "eval": {"metrics": ["accuracy", "roc_auc", "ece"]}}
    return {"regression": make_run(out, reg, reg_cfg, "diabetes"), "binary": make_run(out, binary, bin_cfg, "cancer")}


def test_regression_report(table_runs):
    expected = {"run", "data", "curves", "regression", "attributions"}
    page = _check_page(table_runs["regression"] / "report.html", expected)
    assert "confusion" not in {s["id"] for s in page["sections"]}
    evaluation = json.loads((table_runs["regression"] / "evaluation.json").read_text())
    assert evaluation["metrics"]["r2"] > 0.2


def test_binary_table_report(table_runs):
    expected = {"confusion", "per-class", "wrong", "calibration", "attributions"}
    page = _check_page(table_runs["binary"] / "report.html", expected)
    calibration = next(s for s in page["sections"] if s["id"] == "calibration")
    assert calibration["images"] == 2  # reliability diagram and ROC curve
    evaluation = json.loads((table_runs["binary"] / "evaluation.json").read_text())
    assert evaluation["roc_auc"] > 0.9 and 0 <= evaluation["ece"] < 0.5
    html = (table_runs["binary"] / "report.html").read_text()
    assert "mean radius=" in html  # wrong rows show the user's column names and values


def _with_gan_files(run: Path) -> Path:
    """``run`` with what a GAN run writes beside its model: samples/*.png grids per epoch and a
    Fréchet series in metrics.jsonl."""
    (run / "samples").mkdir()
    for epoch in range(1, 4):
        pixels = np.random.default_rng(epoch).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(run / "samples" / f"epoch-{epoch:03d}.png")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        if "seconds" in r:
            r["val/frechet"] = 100.0 / r["epoch"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def _as_task(run: Path, task: str) -> Path:
    """The run's model.json says its model does ``task`` (a GAN run's says "generate")."""
    meta = json.loads((run / "model.json").read_text())
    meta["spec"]["task"] = task
    (run / "model.json").write_text(json.dumps(meta))
    return run


def _section_ids(report: Path) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', report.read_text())


def test_the_task_chooses_its_sections_not_the_files_in_the_run(trained_run: Path, tmp_path: Path):
    """A classifier's run folder with sample grids in it is still a classifier's report; a run
    whose task is generate gets the GAN section and none of the test-split ones."""
    from torchkeel.evaluate.report import write_report

    classifier = _with_gan_files(copy_run(trained_run, tmp_path / "classifier"))
    write_report(classifier)
    assert "gan" not in _section_ids(classifier / "report.html")
    assert "confusion" in _section_ids(classifier / "report.html")
    generator = _as_task(_with_gan_files(copy_run(trained_run, tmp_path / "generator")), "generate")
    write_report(generator)
    assert _section_ids(generator / "report.html") == ["run", "data", "curves", "lr", "gan"]


def test_gan_section_plugs_in(trained_run: Path, tmp_path: Path):
    """The GAN section's contract: samples/*.png grids and a Fréchet series in metrics.jsonl."""
    from torchkeel.evaluate.report import write_report

    run = _as_task(_with_gan_files(copy_run(trained_run, tmp_path)), "generate")
    write_report(run)
    page = _check_page(run / "report.html", {"gan"})
    gan = next(s for s in page["sections"] if s["id"] == "gan")
    assert gan["images"] == 4  # three grids and the Fréchet curve


class TinyAttentionText(torch.nn.Module):
    """Embedding -> one self-attention layer -> mean over real tokens -> classes; exposes
    attention_weights(x) as the report's contract for Transformer text models asks."""

    def __init__(self, vocab: int, classes: int, dim: int = 16):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim, padding_idx=0)
        self.attn = torch.nn.MultiheadAttention(dim, 2, batch_first=True)
        self.head = torch.nn.Linear(dim, classes)

    def _encode(self, x):
        h = self.embed(x)  # (B, L, D)
        out, weights = self.attn(h, h, h, key_padding_mask=x == 0, average_attn_weights=False)
        return out, weights  # (B, L, D), (B, heads, L, L)

    def forward(self, x):
        out, _ = self._encode(x)
        mask = (x != 0).unsqueeze(-1).float()
        return self.head((out * mask).sum(1) / mask.sum(1).clamp_min(1))

    def attention_weights(self, x):
        return self._encode(x)[1]


def _keyword_texts(n: int = 600, length: int = 12, seed: int = 0):
    """Token ids 2..29 at random, right-padded; class 1 iff token 7 occurs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, 30, (n, length), generator=g)
    x[x == 7] = 8
    y = torch.randint(0, 2, (n,), generator=g)
    pos = torch.randint(0, length // 2, (n,), generator=g)
    x[y == 1, pos[y == 1]] = 7
    lengths = torch.randint(length // 2 + 1, length + 1, (n,), generator=g)
    x[torch.arange(length)[None, :] >= lengths[:, None]] = 0  # padding after each text
    return x, y


def test_text_sections_token_attributions_and_attention(tmp_path: Path):
    from torchkeel.data.bundle import DataBundle, DataSpec, Split
    from torchkeel.evaluate.explain import token_attributions

    x, y = _keyword_texts()
    vocab = ["<pad>", "<unk>"] + [f"w{i}" for i in range(2, 30)]
    spec = DataSpec("keyword", "text", "classification", (12,), classes=["no", "yes"], extra={"vocab": vocab})
    data = DataBundle(spec, Split(x[:400], y[:400]), Split(x[400:500], y[400:500]), Split(x[500:], y[500:]))
    torch.manual_seed(0)
    model = TinyAttentionText(30, 2)
    cfg = {"train": {"epochs": 5, "optimizer": {"lr": 0.01}}, "eval": {"report_examples": 4}}
    run = make_run(tmp_path, data, cfg, "keyword", model=model)
    _check_page(run / "report.html", {"tokens", "attention", "confusion"})
    # the keyword carries the evidence for "yes": it gets the largest attribution
    test_x = data.test.x
    yes = test_x[(test_x == 7).any(1)][:20]
    attr = token_attributions(model.eval(), yes, torch.ones(len(yes), dtype=torch.long), spec)
    top = yes.gather(1, attr.argmax(1, keepdim=True)).view(-1)
    assert (top == 7).float().mean() >= 0.8


def test_transformer_run_gets_attention_with_cls_and_word_tokens(tmp_path: Path):
    """The built-in transformer (attention_maps, a [CLS] token first) on text tokenised by the
    word tokeniser: the report shows its attention over the real words."""
    from torchkeel.data import load
    from torchkeel.data.bundle import DataBundle, Split
    from torchkeel.evaluate.sections_models import _tokens, has_attention
    from torchkeel.models import build

    texts = [f"the film was {w} and {v}" for w, v in zip(["good", "bad"] * 60, ["fun", "dull"] * 60, strict=True)]
    labels = ["pos", "neg"] * 60
    (tmp_path / "reviews.csv").write_text(
        "text,label\n" + "\n".join(f"{t},{lab}" for t, lab in zip(texts, labels, strict=True))
    )
    data = load({"name": "text_csv", "path": str(tmp_path / "reviews.csv")}, seed=0)
    data = DataBundle(data.spec, Split(data.train.x, data.train.y), data.val, data.test)
    torch.manual_seed(0)
    model = build({"name": "transformer", "dim": 16, "heads": 2, "layers": 1}, data.spec)
    assert has_attention(model)
    cfg = {"model": {"name": "transformer"}, "train": {"epochs": 2, "threads": 1}, "eval": {"report_examples": 4}}
    run = make_run(tmp_path, data, cfg, "reviews", model=model)
    _check_page(run / "report.html", {"attention", "confusion"})
    from torchkeel.evaluate.report import build_context

    ctx = build_context(run, model=model, data=data, device="cpu")
    assert _tokens(ctx, data.test.x[0, :3]) == ["the", "film", "was"]


def test_a_laid_out_figure_is_saved_without_measuring_it_again(monkeypatch):
    """bbox_inches="tight" measures every axes' extent again on saving (about a fifth of a
    report figure's CPU time); a figure already laid out by tight_layout is saved without it."""
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from torchkeel.evaluate import plots

    measured = []
    extent = Axes.get_tightbbox
    monkeypatch.setattr(Axes, "get_tightbbox", lambda self, *a, **k: (measured.append(1), extent(self, *a, **k))[1])
    fig = Figure(figsize=(3, 2))
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    fig.tight_layout()
    laid_out = len(measured)
    assert plots.png(fig).startswith(b"\x89PNG") and len(measured) == laid_out
    assert plots.png(fig, tight=True) and len(measured) == laid_out + 1  # cropping to the content measures again
