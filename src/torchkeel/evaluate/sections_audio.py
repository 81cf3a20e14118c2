"""The report's section for sound models: log-mel spectrograms of test clips with the model's
prediction, and gradient saliency over time x frequency for the predicted class.

It needs a model with a ``frontend`` (waveform -> features, frames' mask) and ``classify``
(features -> logits), as models/audio.py's are; the saliency is taken on the features, since
a gradient on raw samples is noise to the eye.
"""

from __future__ import annotations

import torch
from torch import nn

from torchkeel.evaluate import plots
from torchkeel.evaluate.report_parts import Figure, ReportContext, Section
from torchkeel.evaluate.sections import class_names


def has_frontend(model: nn.Module) -> bool:
    return isinstance(getattr(model, "frontend", None), nn.Module) and callable(getattr(model, "classify", None))


def spectrogram_section(ctx: ReportContext) -> Section:
    model = ctx.model
    device = next(model.parameters()).device
    n = min(ctx.examples, 6, len(ctx.data.test.x))
    x, y = ctx.data.test.x[:n].to(device), ctx.data.test.y[:n]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats, valid = model.frontend(x)
        feats = feats.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.classify(feats, valid)
            probs = logits.detach().float().softmax(-1)
            cls = probs.argmax(-1)
            logits.gather(1, cls[:, None]).sum().backward()
    finally:
        model.train(was_training)
    saliency = feats.grad.abs()  # type: ignore[union-attr]
    names = class_names(ctx)
    hop_s = model.frontend.hop / float(ctx.spec.extra.get("sample_rate", 16000))
    from matplotlib.figure import Figure as PlotFigure  # imported for sound runs only

    fig = PlotFigure(figsize=(9.0, 1.9 * n))
    for i in range(n):
        frames = max(1, int(valid[i].sum()))
        title = f"true {names[int(y[i])]}, pred {names[int(cls[i])]} {float(probs[i, cls[i]]):.0%}"
        for j, (values, what, cmap) in enumerate(
            ((feats[i], "log-mel (normalised)", "magma"), (saliency[i], "saliency", "hot"))
        ):
            ax = fig.add_subplot(n, 2, 2 * i + j + 1)
            image = values[:, :frames].detach().cpu().numpy()
            ax.imshow(image, origin="lower", aspect="auto", cmap=cmap, extent=(0, frames * hop_s, 0, image.shape[0]))
            ax.set_title(f"{title} - {what}" if j == 0 else what, fontsize=8)
            ax.set_ylabel("mel bin", fontsize=7)
            ax.tick_params(labelsize=6)
            if i == n - 1:
                ax.set_xlabel("seconds", fontsize=7)
    fig.tight_layout()
    caption = (
        f"the first {n} test clips: the model's normalised log-mel features and |gradient| of the predicted "
        "class's logit over them (time x frequency)"
    )
    return Section("spectrograms", "Spectrograms and saliency", "", [Figure(plots.png(fig), caption)])


def transcripts_section(ctx: ReportContext) -> Section:
    """Reference against hypothesis for test clips, the worst first, with the alignment's
    errors marked: substituted and inserted words highlighted, deleted words struck through."""
    import html

    import jiwer

    pairs = [(p["reference"], p["hypothesis"]) for p in ctx.analysis.details.get("transcripts", [])]
    rows = []
    for ref, hyp in pairs:
        if not ref.strip():
            continue
        out = jiwer.process_words(ref, hyp)
        r, h = out.references[0], out.hypotheses[0]
        marked, errors = [], 0
        for chunk in out.alignments[0]:
            if chunk.type == "equal":
                marked += [html.escape(w) for w in h[chunk.hyp_start_idx : chunk.hyp_end_idx]]
            elif chunk.type == "delete":
                marked += [f"<del>{html.escape(w)}</del>" for w in r[chunk.ref_start_idx : chunk.ref_end_idx]]
            else:  # substitute, insert
                marked += [f"<mark>{html.escape(w)}</mark>" for w in h[chunk.hyp_start_idx : chunk.hyp_end_idx]]
            if chunk.type != "equal":
                errors += max(chunk.ref_end_idx - chunk.ref_start_idx, chunk.hyp_end_idx - chunk.hyp_start_idx)
        rows.append((errors, html.escape(ref), " ".join(marked) or "<em>(nothing)</em>"))
    rows.sort(key=lambda row: -row[0])
    body = "".join(f"<tr><td class='num'>{e}</td><td>{r}</td><td>{h}</td></tr>" for e, r, h in rows[:20])
    metrics = ctx.analysis.metrics
    summary = f"<p>test WER {metrics.get('wer', float('nan')):.4f}, CER {metrics.get('cer', float('nan')):.4f} " \
        "(corpus-level, greedy decoding)</p>"  # fmt: skip
    table = f"<table><thead><tr><th>word errors</th><th>reference</th><th>hypothesis</th></tr></thead>{body}</table>"
    note = (
        "<p>the first test clips, the most errors first; <mark>substituted or inserted</mark>, <del>deleted</del></p>"
    )
    return Section("transcripts", "Transcripts", summary + note + table, [])
