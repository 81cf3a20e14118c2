"""``keel predict``'s output: predictions printed or as JSON lines, table rows written to a
file, and the pictures of tasks that draw their predictions (a mask and its overlay)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchkeel.cli_evaluate import out
from torchkeel.errors import KeelError
from torchkeel.serve.predictor import Prediction, Predictor


def predict_tables(predictor: Predictor, files: list[Path], output: Path | None, as_json: bool, force: bool) -> None:
    from torchkeel.atomic import check_output
    from torchkeel.serve.predictor import predictions_path

    if output is not None and len(files) > 1:
        raise KeelError("--output takes one input file; give the files one at a time")
    outputs = [predictions_path(path, output) for path in files]
    for i, written in enumerate(outputs):  # every output checked before any is written
        check_output(written, "--output", inputs=files, force=force)
        if written in outputs[:i]:
            raise KeelError(f"{files[i]} would write {written}, as an earlier input does; predict them one at a time")
    for path in files:
        written, results = predictor.predict_table(path, output, force=force)
        if as_json:
            for r in results:
                print(json.dumps(r.to_dict()))
        else:
            for r in results[:10]:
                print_prediction(r, False)
            more = f" (first 10 of {len(results):,} shown)" if len(results) > 10 else ""
            out.print(f"wrote {len(results):,} predictions to {written}{more}", highlight=False)


def print_prediction(r: Prediction, as_json: bool) -> None:
    if as_json:
        print(json.dumps(r.to_dict()))
    elif "boxes" in r.output:  # a detection: each box with its class and score
        found = "  ".join(
            f"{b['class']} {b['score']:.2f} at {[round(v) for v in b['box']]}" for b in r.output["boxes"][:8]
        )
        more = f"  (+{len(r.output['boxes']) - 8} more)" if len(r.output["boxes"]) > 8 else ""
        out.print(f"{r.source}: {found or 'no objects found'}{more}", highlight=False)
    elif "classes" in r.output:  # a segmentation: the classes it shows, by their share of the pixels
        shares = "  ".join(f"{c['class']} {c['fraction']:.1%}" for c in r.output["classes"][:6])
        out.print(f"{r.source}: {shares}", highlight=False)
    elif r.value is not None or r.text is not None:  # values, a transcript, a translation
        shown = r.text if r.value is None else ", ".join(f"{v:.4f}" for v in r.value)
        out.print(f"{r.source}: {shown}", highlight=False)
    else:
        tops = "  ".join(f"{c} {p:.1%}" for c, p in r.top)
        note = f"  ({r.note})" if r.note else ""
        out.print(f"{r.source}: {tops}{note}", highlight=False)


def write_boxed(results: list[Prediction], output: Path, spec: Any, force: bool) -> None:
    """Each image with its predicted boxes drawn on it, at its own size, to ``output`` (a file
    for one image, else a folder of NAME.boxed.png)."""
    from PIL import Image

    from torchkeel.atomic import check_output
    from torchkeel.evaluate.sections_detect import draw_boxes

    folder = len(results) > 1 or output.is_dir()
    targets = [output / f"{Path(r.source).stem}.boxed.png" if folder else output for r in results]
    for target in targets:
        check_output(target, "--output", inputs=[r.source for r in results], force=force)
    for r, target in zip(results, targets, strict=True):
        with Image.open(r.source) as img:
            drawn = draw_boxes(img.convert("RGB"), r.output["boxes"], spec.classes or [])
        drawn.save(target)
        out.print(f"wrote {target} ({len(r.output['boxes'])} boxes)", highlight=False)


def write_pictures(results: list[Prediction], output: Path, spec: Any, force: bool) -> None:
    """Each image's predicted mask (a class-index PNG at the size the model saw it) to ``output``
    (a file for one image, else a folder of NAME.mask.png), with NAME.overlay.png beside it."""
    from torchkeel.atomic import check_output
    from torchkeel.serve.pictures import overlay_path, write_mask

    if all("boxes" in r.output for r in results):
        write_boxed(results, output, spec, force)
        return
    if not all("mask" in r.output for r in results):
        raise KeelError("--output for images writes predicted masks or boxes: this model predicts neither")
    folder = len(results) > 1 or output.is_dir()
    targets = [output / f"{Path(r.source).stem}.mask.png" if folder else output for r in results]
    for target in targets:
        check_output(target, "--output", inputs=[r.source for r in results], force=force)
        check_output(overlay_path(target), "--output", inputs=[r.source for r in results], force=force)
    for r, target in zip(results, targets, strict=True):
        written = write_mask(r.output, Path(r.source), spec, target)
        out.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False)
