"""study.html: a study's optimisation history, parameter importances and trials, in one
self-contained page (SVG charts inline)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from torchkeel import atomic
from torchkeel.search_space import TuneConfig

STUDY_REPORT = "study.html"


def write_study_report(study: Any, folder: Path, tune: TuneConfig) -> Path:
    from torchkeel.evaluate import charts
    from torchkeel.evaluate.sections import table

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    parts = [f"<h1>Study {html.escape(study.study_name)}</h1>"]
    parts.append(
        f"<p>{len(study.trials)} trials ({_states(study)}); objective: {html.escape(tune.metric)} at the last epoch, "
        f"{study.direction.name.lower()}d.</p>"
    )
    if complete:
        best = study.best_trial
        parts.append(
            f"<p>Best: trial {best.number}, {html.escape(tune.metric)} {best.value:.4f}, "
            f"{html.escape(', '.join(f'{k}={_param(v)}' for k, v in best.params.items()))}.</p>"
        )
        parts.append(f"<figure>{history(study, tune)}</figure>")  # optimisation history
        importances, method = param_importances(study)
        if importances:
            title = f"Parameter importances ({method})"
            chart = charts.bars(list(importances), {"importance": list(importances.values())}, title, horizontal=True)
            parts.append(f"<figure>{chart}</figure>")
        else:
            parts.append("<p>Too few complete trials yet to rank the parameters by importance.</p>")
    keys = sorted({k for t in study.trials for k in t.params})
    rows = [
        (
            t.number,
            t.state.name.lower(),
            _value(t.value),
            len(t.intermediate_values),
            *[_param(t.params.get(k)) for k in keys],
        )
        for t in study.trials
    ]
    parts.append(table(["trial", "state", tune.metric, "epochs", *keys], rows))
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>study "
        f"{html.escape(study.study_name)}</title><style>body{{font:14px system-ui,sans-serif;margin:24px;}}"
        "table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:3px 10px 3px 0;text-align:left}"
        "img,svg.chart{max-width:100%;height:auto}</style></head><body>" + "\n".join(parts) + "</body></html>"
    )
    path = folder / STUDY_REPORT
    atomic.write_text(path, page)
    return path


def history(study: Any, tune: TuneConfig) -> str:
    """Each complete trial's value and the best so far, by trial number."""
    from torchkeel.evaluate import charts

    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    xs = [t.number for t in done]
    ys = [t.value for t in done]
    pick = min if study.direction.name == "MINIMIZE" else max
    best = [pick(ys[: i + 1]) for i in range(len(ys))]
    panels = {"Optimisation history": {tune.metric: (xs, ys), "best so far": (xs, best)}}
    return charts.line_panels(panels, "trial")


def param_importances(study: Any) -> tuple[dict[str, float], str]:
    """Optuna's default importance evaluator (its name is returned beside the values); empty
    when there are too few trials for it to tell parameters apart."""
    import warnings

    import optuna

    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (RuntimeError, ValueError, ZeroDivisionError):
            return {}, ""
    if any("too small" in str(w.message) for w in caught):
        return {}, ""
    return values, "PED-ANOVA"


def _states(study: Any) -> str:
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def _value(value: float | None) -> float:
    return float("nan") if value is None else value


def _param(value: Any) -> Any:
    if isinstance(value, float) and not math.isnan(value):
        return float(f"{value:.4g}")
    return "-" if value is None else value
