"""How much of CamVid's gap is the change of video: configs/camvid.yaml's recipe trained on the
101 frames of the training video alone, and on those plus the first half of the test video
(31 frames, 8550-9450, dusk), both scored on the second half of the test video (31 frames,
9480-10380, a contiguous later stretch of the same drive, never trained on).

The folders are symlinks to the data, laid out as ``mask_folder`` reads them (``val/`` +
``valannot/`` for training, ``test/`` + ``testannot/``); nothing is copied.

    python benchmarks/camvid_indomain.py --root data/camvid --variant daylight
    python benchmarks/camvid_indomain.py --root data/camvid --variant with-dusk

(two processes, side by side on two cores; ``--set`` adds config overrides).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from torchkeel.config import load_config
from torchkeel.data import load
from torchkeel.evaluate.metrics import evaluate
from torchkeel.models import build
from torchkeel.train.loop import fit

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("daylight", "with-dusk")


def layout(source: Path, target: Path, with_dusk: bool) -> tuple[int, int]:
    """Symlinked folders under ``target``; the numbers of training and test frames."""
    for name in ("val", "valannot", "test", "testannot"):
        (target / name).mkdir(parents=True)

    def link(image: Path, split: str) -> None:
        (target / split / image.name).symlink_to(image.resolve())
        mask = source / f"{image.parent.name}annot" / image.name
        (target / f"{split}annot" / image.name).symlink_to(mask.resolve())

    for image in sorted((source / "val").glob("*.png")):
        link(image, "val")
    dusk = sorted((source / "test").glob("*.png"))
    first, second = dusk[: len(dusk) // 2], dusk[len(dusk) // 2 :]
    for image in first if with_dusk else []:
        link(image, "val")
    for image in second:
        link(image, "test")
    return len(list((target / "val").iterdir())), len(second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "camvid.yaml"))
    parser.add_argument("--root", default=str(ROOT / "data" / "camvid"))
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--set", action="append", default=[], help="more config overrides")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        trained_on, tested_on = layout(Path(args.root), Path(folder), args.variant == "with-dusk")
        cfg = load_config(args.config, [f"data.root={folder}", "eval.report=false", *args.set])
        bundle = load(cfg.data, cfg.seed)
        torch.manual_seed(cfg.seed)
        start = time.perf_counter()
        run = fit(build(cfg.model, bundle.spec), bundle, cfg, progress=False)
        seconds = time.perf_counter() - start
        test = bundle.splits()["test"]
        result = evaluate(
            run.model, test, bundle.spec, None, ["miou", "pixel_accuracy"], cfg.eval.batch_size, tta=cfg.eval.tta
        )
    row = {
        "variant": args.variant,
        "training_folder_frames": trained_on,  # 10% of them held out for val (data.val_fraction)
        "test_frames": tested_on,
        "epochs": len(run.history),
        "train_s": round(seconds, 1),
        **{k: round(float(result[k]), 4) for k in ("miou", "pixel_accuracy")},
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
