"""Small data sets written in the real file formats, for the data tests: IDX files (the MNIST
family), CIFAR's python batches, SVHN's .mat files, PNG/JPEG/BMP folders, CSV/TSV/JSONL."""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format of LeCun's MNIST files: magic (0, 0, 0x08 = ubyte, ndim), big-endian
    int32 dimensions, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(idx_bytes(array))


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def digit_images(n: int, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size) uint8 images of light bars on dark, the bar's row given by the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = (rng.random((n, size, size)) * 40).astype(np.uint8)
    for i, label in enumerate(labels):
        row = 2 + int(label) * (size - 4) // 10
        images[i, row : row + 2, 4:-4] = 230
    return images, labels


def write_mnist_family(root: Path, folder: str = "MNIST", train: int = 300, test: int = 100) -> None:
    """ROOT/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, as torchvision reads them."""
    raw = root / folder / "raw"
    for prefix, n, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = digit_images(n, seed=seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


def colour_images(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32, 3) uint8 noise with a class-dependent colour tint, and labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    tint = rng.integers(0, 256, (classes, 3))
    images = (rng.random((n, 32, 32, 3)) * 100 + tint[labels][:, None, None, :] * 0.6).clip(0, 255)
    return images.astype(np.uint8), labels


def _pickle(path: Path, obj: dict) -> str:
    # CIFAR's python batches are pickles by format; this is how the test makes them
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar10(root: Path, per_batch: int = 40, test: int = 60) -> dict[str, list]:
    """ROOT/cifar-10-batches-py with 5 train batches, test_batch and batches.meta. Returns the
    (name, md5) lists to put in torchvision's CIFAR10 class for its integrity check."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    train_list = []
    for b in range(1, 6):
        images, labels = colour_images(per_batch, 10, seed=b)
        entry = {"data": images.transpose(0, 3, 1, 2).reshape(per_batch, -1), "labels": labels.tolist()}
        train_list.append([f"data_batch_{b}", _pickle(folder / f"data_batch_{b}", entry)])
    images, labels = colour_images(test, 10, seed=9)
    entry = {"data": images.transpose(0, 3, 1, 2).reshape(test, -1), "labels": labels.tolist()}
    test_list = [["test_batch", _pickle(folder / "test_batch", entry)]]
    meta = {
        "filename": "batches.meta",
        "key": "label_names",
        "md5": _pickle(folder / "batches.meta", {"label_names": names}),
    }
    return {"train_list": train_list, "test_list": test_list, "meta": meta}


def write_cifar100(root: Path, train: int = 200, test: int = 100) -> dict[str, list]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    lists = {}
    for name, n, seed in (("train", train, 0), ("test", test, 1)):
        images, labels = colour_images(n, 100, seed=seed)
        entry = {"data": images.transpose(0, 3, 1, 2).reshape(n, -1), "fine_labels": labels.tolist()}
        lists[f"{name}_list"] = [[name, _pickle(folder / name, entry)]]
    names = [f"class{i:02d}" for i in range(100)]
    md5 = _pickle(folder / "meta", {"fine_label_names": names})
    lists["meta"] = {"filename": "meta", "key": "fine_label_names", "md5": md5}
    return lists


def write_svhn(root: Path, train: int = 120, test: int = 60) -> dict[str, list]:
    """SVHN's train_32x32.mat / test_32x32.mat: X (32, 32, 3, N), y (N, 1) with 10 for digit 0."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    split_list = {}
    for split, n, seed in (("train", train, 0), ("test", test, 1)):
        images, labels = colour_images(n, 10, seed=seed)
        path = root / f"{split}_32x32.mat"
        savemat(path, {"X": images.transpose(1, 2, 3, 0), "y": np.where(labels == 0, 10, labels)[:, None]})
        split_list[split] = ["http://unused", path.name, hashlib.md5(path.read_bytes()).hexdigest()]
    return split_list


def write_image_folder(root: Path, per_class: int = 12, size: tuple[int, int] = (20, 24), grey: bool = False) -> None:
    """ROOT/<red|green|blue>/<i>.png|jpg|bmp: colour-tinted noise (or grey levels), one class per tint."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("blue", "green", "red")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.random((*size, 3)) * 60).astype(np.uint8)
            pixels[..., c] += 180
            image = Image.fromarray(pixels).convert("L") if grey else Image.fromarray(pixels)
            suffix = ("png", "jpg", "bmp")[i % 3]
            image.save(root / name / f"{i}.{suffix}")


def write_rows(path: Path, rows: list[dict], kind: str | None = None) -> Path:
    kind = kind or path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]), delimiter="\t" if kind == "tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)
    return path


def shop_rows(n: int = 300, seed: int = 0) -> list[dict]:
    """A table with gaps: numbers (age with missing values), a category with missing values,
    an id column, a numeric target (price) and a class target (buys)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        age = None if rng.random() < 0.1 else int(rng.integers(18, 70))
        income = float(rng.normal(50, 15))
        city = [None, "paris", "lyon", "nice"][int(rng.integers(0, 4))]
        price = 0.05 * (age or 40) + 0.1 * income + (3 if city == "paris" else 0) + float(rng.normal(0, 0.3))
        rows.append({"id": i, "age": age, "income": round(income, 3), "city": city, "price": round(price, 3)})
    median = float(np.median([r["price"] for r in rows]))
    for r in rows:
        r["buys"] = "yes" if r["price"] > median else "no"
    return rows


TOPICS = {
    "sport": ["goal", "match", "team", "player", "score", "win", "league", "coach", "ball", "season"],
    "tech": ["software", "chip", "computer", "data", "network", "code", "cloud", "phone", "app", "internet"],
    "food": ["recipe", "cook", "bake", "flavor", "dinner", "kitchen", "spice", "bread", "cheese", "soup"],
}
FILLER = ["the", "a", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as", "was"]


def news_rows(n: int = 240, seed: int = 0) -> list[dict]:
    """Short texts whose topic words give the label."""
    rng = np.random.default_rng(seed)
    labels = list(TOPICS)
    rows = []
    for _ in range(n):
        label = labels[int(rng.integers(0, 3))]
        words = list(rng.choice(TOPICS[label], int(rng.integers(3, 8)))) + list(rng.choice(FILLER, 5))
        rng.shuffle(words)
        rows.append({"text": " ".join(words).capitalize() + ".", "label": label})
    return rows


def shapes_scene(seed: int, size: tuple[int, int] = (32, 40)) -> tuple[np.ndarray, np.ndarray]:
    """An RGB picture of a red disc (class 1) and a blue rectangle (class 2) on a noisy grey
    background (class 0), and its exact class-index mask."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = rng.integers(70, 130, (h, w, 3)).astype(np.int16)
    mask = np.zeros((h, w), np.uint8)
    top, left = int(rng.integers(0, h - 10)), int(rng.integers(0, w - 14))
    mask[top : top + int(rng.integers(6, 10)), left : left + int(rng.integers(8, 14))] = 2
    cy, cx, r = int(rng.integers(7, h - 7)), int(rng.integers(7, w - 7)), int(rng.integers(4, 7))
    yy, xx = np.mgrid[:h, :w]
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    image[mask == 1] = [200, 40, 40]
    image[mask == 2] = [40, 60, 210]
    image += rng.integers(-20, 20, (h, w, 3))
    return image.clip(0, 255).astype(np.uint8), mask


def write_mask_folder(root: Path, n: int = 60, size: tuple[int, int] = (32, 40)) -> dict[str, np.ndarray]:
    """ROOT/images/NAME.png and ROOT/masks/NAME.png (index masks) of :func:`shapes_scene`;
    returns the masks by name."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    masks = {}
    for i in range(n):
        image, mask = shapes_scene(i, size)
        Image.fromarray(image).save(root / "images" / f"scene{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"scene{i:03d}.png")
        masks[f"scene{i:03d}"] = mask
    (root / "classes.txt").write_text("background\ndisc\nbox\n", encoding="utf-8")
    return masks


def boxes_scene(seed: int, size: tuple[int, int] = (96, 128)) -> tuple[np.ndarray, list[tuple[str, list[int]]]]:
    """An RGB picture of one to three objects on a noisy grey background: red discs ("disc")
    and blue squares ("square"), 14 to 30 pixels across, and their boxes (x1, y1, x2, y2)."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = rng.integers(70, 130, (h, w, 3)).astype(np.int16)
    yy, xx = np.mgrid[:h, :w]
    objects: list[tuple[str, list[int]]] = []
    for _ in range(int(rng.integers(1, 4))):
        side = int(rng.integers(14, 31))
        top, left = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        box = [left, top, left + side, top + side]
        if any(min(b[2], box[2]) > max(b[0], box[0]) and min(b[3], box[3]) > max(b[1], box[1]) for _, b in objects):
            continue  # objects never overlap: each box is exactly one shape
        if rng.random() < 0.5:
            r = side / 2
            inside = (yy + 0.5 - top - r) ** 2 + (xx + 0.5 - left - r) ** 2 <= r * r
            image[inside] = [200, 40, 40]
            objects.append(("disc", box))
        else:
            image[top : top + side, left : left + side] = [40, 60, 210]
            objects.append(("square", box))
    image += rng.integers(-20, 20, (h, w, 3))
    return image.clip(0, 255).astype(np.uint8), objects


def voc_xml(filename: str, size: tuple[int, int], objects: list[tuple[str, list[int]]]) -> str:
    """A Pascal VOC annotation file's text."""
    h, w = size
    parts = [f"<annotation><filename>{filename}</filename><size><width>{w}</width><height>{h}</height>"
             "<depth>3</depth></size>"]  # fmt: skip
    for name, (x1, y1, x2, y2) in objects:
        parts.append(f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                     f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")  # fmt: skip
    return "".join(parts) + "</annotation>\n"


def write_box_folder(root: Path, n: int = 60, size: tuple[int, int] = (96, 128)) -> dict[str, list]:
    """A Pascal VOC folder of :func:`boxes_scene` pictures: ROOT/JPEGImages/NAME.png and
    ROOT/Annotations/NAME.xml, and ImageSets/Main/{train,val,test}.txt (70/15/15%); returns
    each picture's objects by name."""
    from PIL import Image

    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    found, names = {}, []
    for i in range(n):
        name = f"scene{i:03d}"
        image, objects = boxes_scene(i, size)
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.png")
        (root / "Annotations" / f"{name}.xml").write_text(voc_xml(f"{name}.png", size, objects), encoding="utf-8")
        found[name] = objects
        names.append(name)
    cut = [0, int(n * 0.7), int(n * 0.85), n]
    for split, a, b in zip(("train", "val", "test"), cut, cut[1:], strict=False):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names[a:b]) + "\n", encoding="utf-8")
    return found


def write_box_formats(root: Path, n: int = 20, size: tuple[int, int] = (96, 128)) -> dict[str, Path]:
    """The same :func:`boxes_scene` pictures and boxes as a Pascal VOC folder, a COCO JSON
    layout and a YOLO folder, each with the same train / val / test split; their roots by format."""
    from PIL import Image

    voc = root / "voc"
    scenes = write_box_folder(voc, n=n, size=size)
    parts = {name: split for split in ("train", "val", "test")
             for name in (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()}  # fmt: skip
    classes = ["disc", "square"]
    h, w = size
    coco, yolo = root / "coco", root / "yolo"
    for split in ("train", "val", "test"):
        names = [name for name, part in parts.items() if part == split]
        (coco / "images" / split).mkdir(parents=True)
        (yolo / "images" / split).mkdir(parents=True)
        (yolo / "labels" / split).mkdir(parents=True)
        images, annotations = [], []
        for i, name in enumerate(names):
            picture = Image.open(voc / "JPEGImages" / f"{name}.png")
            picture.save(coco / "images" / split / f"{name}.png")
            picture.save(yolo / "images" / split / f"{name}.png")
            images.append({"id": i + 1, "file_name": f"{name}.png", "width": w, "height": h})
            lines = []
            for label, (x1, y1, x2, y2) in scenes[name]:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0,
                                    "category_id": 10 + 5 * classes.index(label),  # ids need not run 1..K
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})  # fmt: skip
                cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
                lines.append(f"{classes.index(label)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
            (yolo / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        categories = [{"id": 10 + 5 * k, "name": c} for k, c in enumerate(classes)]
        (coco / "annotations").mkdir(exist_ok=True)
        document = {"images": images, "annotations": annotations, "categories": categories}
        (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(document), encoding="utf-8")
    (yolo / "data.yaml").write_text("names:\n  0: disc\n  1: square\n", encoding="utf-8")
    return {"voc": voc, "coco": coco, "yolo": yolo}
