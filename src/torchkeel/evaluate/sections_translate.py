"""The report section of a translation run: the test scores with sacreBLEU's signatures, the
best and worst test sentences by sentence chrF, and the decoder's attention over the source."""

from __future__ import annotations

import html

import torch

from torchkeel.evaluate import plots
from torchkeel.evaluate.report_parts import Figure, ReportContext, Section
from torchkeel.evaluate.sections import key_values

SHOWN = 10  # best and worst sentences each
MAPS = 3  # attention maps
LONGEST = 24  # tokens shown per side of a map


def translations_section(ctx: ReportContext) -> Section:
    from sacrebleu.metrics import CHRF

    details, metrics = ctx.analysis.details, ctx.analysis.metrics
    facts = {k: metrics[k] for k in ("bleu", "bleu_lowercase", "chrf", "perplexity") if k in metrics}
    facts |= {f"{k} signature": v for k, v in details.get("signatures", {}).items()}
    rows = details.get("translations", [])
    chrf = CHRF()
    scored = sorted(((chrf.sentence_score(r["hypothesis"], [r["reference"]]).score, r) for r in rows), key=_first)
    body = key_values(facts) + _table("Worst test sentences by chrF", scored[:SHOWN])
    body += _table("Best test sentences by chrF", scored[::-1][:SHOWN])
    figures = [_attention_maps(ctx)] if hasattr(ctx.model, "cross_attention") and len(ctx.data.test) else []
    return Section("translations", "Translations", body, figures)


def _first(pair: tuple[float, dict]) -> float:
    return pair[0]


def _table(title: str, scored: list[tuple[float, dict]]) -> str:
    cells = "".join(
        f"<tr><td class='num'>{score:.1f}</td><td>{html.escape(r['source'])}</td>"
        f"<td>{html.escape(r['reference'])}</td><td>{html.escape(r['hypothesis'])}</td></tr>"
        for score, r in scored
    )
    head = "<tr><th>chrF</th><th>source</th><th>reference</th><th>translation</th></tr>"
    return f"<h3>{html.escape(title)}</h3><table><thead>{head}</thead>{cells}</table>"


def _attention_maps(ctx: ReportContext) -> Figure:
    """The last decoder layer's attention over the source while it writes its own translation."""
    from tokenizers import Tokenizer

    spec, test = ctx.spec, ctx.data.test
    device = next(ctx.model.parameters()).device
    src = test.x[:MAPS].to(device)
    ctx.model.eval()
    with torch.inference_mode():
        hyp = ctx.model(src)  # (B, L)
        tgt_in = torch.cat([torch.full((len(src), 1), 2, dtype=hyp.dtype, device=device), hyp], 1)
        weights = ctx.model.cross_attention(src, tgt_in)  # (B, T, S)
    source = Tokenizer.from_str(_json(spec.extra["tokenizer"]))
    target = Tokenizer.from_str(_json(spec.extra["target_tokenizer"]))
    mats, rows, cols = [], [], []
    for i in range(len(src)):
        s = min(int((src[i] != 0).sum()), LONGEST)
        t = min(int((hyp[i] != 0).sum()) + 1, LONGEST)  # + the EOS it ended with
        mats.append(weights[i, :t, :s].float().cpu().numpy())
        cols.append([_piece(source, j) for j in src[i, :s].tolist()])
        rows.append([_piece(target, j) for j in hyp[i, : t - 1].tolist()] + ["</s>"])
    png = plots.matrix_grid(mats, rows, [f"test sentence {i + 1}" for i in range(len(mats))], columns=cols)
    return Figure(png, "last decoder layer's attention over the source, averaged over heads; rows: output tokens")


def _json(stored: dict) -> str:
    import json

    return json.dumps(stored["tokenizer"])


def _piece(tokenizer, token: int) -> str:
    return tokenizer.decode([token], skip_special_tokens=False).strip() or "·"
