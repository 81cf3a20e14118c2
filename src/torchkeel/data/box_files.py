"""Object-detection annotations (Pascal VOC XML, COCO JSON, YOLO txt) read into plain records,
every box checked against its image: one bad box must not stop training deep inside torchvision."""

from __future__ import annotations

import json
import math
import os
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from torchkeel.errors import DataError, DataWarning, check_choice

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels

FORMATS = ("auto", "voc", "coco", "yolo")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
YOLO_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid"), "test": ("test",)}  # Roboflow writes valid/
LAYOUTS = {
    "voc": "Pascal VOC (ROOT/Annotations/*.xml + ROOT/JPEGImages/, or one such folder inside ROOT)",
    "coco": "COCO (ROOT/annotations/*.json, or ROOT a .json file)",
    "yolo": "YOLO (ROOT/images/ + ROOT/labels/*.txt, flat or with train/ val/ test/ inside both)",
}

ROUNDING = 0.01  # pixels: a box over the edge by less is clipped without a word (6-decimal YOLO fractions)

# the kinds of problem, each counted in one warning
UNPARSEABLE = "boxes with unparseable numbers were dropped"
NON_FINITE = "boxes with non-finite numbers (NaN, inf) were dropped"
SWAPPED = "boxes with inverted corners (x2 < x1 or y2 < y1) were swapped"
ZERO_AREA = "boxes of zero area were dropped"
OUTSIDE = "boxes entirely outside the image were dropped"
CLIPPED = "boxes partly outside the image were clipped to it"


@dataclass
class BoxRecord:
    """One image and its validated boxes; ``difficult`` is parallel to ``boxes`` (VOC's flag)."""

    image: str  # absolute path
    size: tuple[int, int]  # (height, width) in pixels
    boxes: list[Box]
    labels: list[str]
    part: str = ""  # "train" / "val" / "test" when the files say so
    difficult: list[bool] = field(default_factory=list)


@dataclass
class BoxSet:
    """A detection data set: records sorted by image path, the class order, what was repaired."""

    records: list[BoxRecord]
    classes: list[str]
    format: str  # "voc" | "coco" | "yolo"
    repaired: list[str]  # the warnings already emitted


@dataclass
class _Raw:
    """An image's boxes as the file gives them, before validation (None: unparseable)."""

    image: Path
    size: tuple[int, int] | None  # (height, width); None: read the image header
    boxes: list[Box | None]
    labels: list[str]
    source: str  # the file named in warnings, relative to ROOT
    part: str = ""
    difficult: list[bool] = field(default_factory=list)


class _Notes:
    """Problems counted by kind, each emitted as one DataWarning naming up to three files."""

    def __init__(self, base: Path):
        self.base = base
        self.found: dict[str, list[str]] = {}

    def rel(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.base)).as_posix()

    def add(self, what: str, source: str) -> None:
        self.found.setdefault(what, []).append(source)

    def emit(self) -> list[str]:
        messages = []
        for what, sources in self.found.items():
            examples = ", ".join(list(dict.fromkeys(sources))[:3])
            messages.append(f"box_folder: {len(sources)} {what} (e.g. {examples})")
            warnings.warn(messages[-1], DataWarning, stacklevel=3)
        return messages


def detect_format(root: Path) -> str:
    """Which layout ``root`` holds: "voc", "coco" or "yolo"; DataError naming them all if none."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".json":
        return "coco"
    if root.is_dir():
        if _voc_folder(root) is not None:
            return "voc"
        if any((root / "annotations").glob("*.json")):
            return "coco"
        if (root / "images").is_dir() and any((root / "labels").rglob("*.txt")):
            return "yolo"
    raise DataError(f"box_folder: no detection annotations under {root}; looked for {'; '.join(LAYOUTS.values())}")


def read_box_set(root: str | Path, format: str = "auto", classes: list[str] | None = None) -> BoxSet:
    """Read a detection data set; ``classes`` fixes the class order and drops boxes of other names."""
    root = Path(root)
    check_choice("box format", format, FORMATS)
    if not root.exists():
        raise DataError(f"box_folder: {root} does not exist")
    fmt = detect_format(root) if format == "auto" else format
    notes = _Notes(root if root.is_dir() else root.parent)
    raws, named = READERS[fmt](root, notes)
    order = list(classes) if classes is not None else named or sorted({name for r in raws for name in r.labels})
    records = [record for raw in raws if (record := _validated(raw, set(order), notes)) is not None]
    repaired = notes.emit()
    if not records:
        raise DataError(f"box_folder: no images with annotations under {root} ({LAYOUTS[fmt]})")
    return BoxSet(sorted(records, key=lambda r: r.image), order, fmt, repaired)


def check_box(box: Box | None, height: int, width: int) -> tuple[Box | None, list[str]]:
    """The box made valid for an image of ``height`` x ``width`` (None: dropped), and its problems."""
    if box is None:
        return None, [UNPARSEABLE]
    if not all(math.isfinite(v) for v in box):
        return None, [NON_FINITE]
    x1, y1, x2, y2 = box
    problems = []
    if x2 < x1 or y2 < y1:
        (x1, x2), (y1, y2) = sorted((x1, x2)), sorted((y1, y2))
        problems.append(SWAPPED)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None, [*problems, ZERO_AREA]
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:  # under a pixel of it inside
        return None, [*problems, OUTSIDE]
    if max(abs(a - b) for a, b in zip(clipped, (x1, y1, x2, y2), strict=True)) > ROUNDING:
        problems.append(CLIPPED)  # over by more than the rounding of normalised coordinates (YOLO's)
    return clipped, problems


def _validated(raw: _Raw, keep: set[str], notes: _Notes) -> BoxRecord | None:
    size = raw.size or _image_size(raw.image)
    if size is None:
        notes.add("images could not be read and were left out", notes.rel(raw.image))
        return None
    record = BoxRecord(os.path.abspath(raw.image), size, [], [], raw.part)
    difficult = raw.difficult or [False] * len(raw.boxes)
    for box, label, hard in zip(raw.boxes, raw.labels, difficult, strict=True):
        if label not in keep:
            notes.add("boxes of classes not in the classes list were dropped", raw.source)
            continue
        box, problems = check_box(box, *size)
        for problem in problems:
            notes.add(problem, raw.source)
        if box is not None:
            record.boxes.append(box)
            record.labels.append(label)
            record.difficult.append(hard)
    return record


def _image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the image header (PIL opens lazily: no pixels are decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _numbers(values: list | None, count: int = 4) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(str(v).strip()) for v in values or [])
    except ValueError:
        return None
    return numbers if len(numbers) == count else None


def _images_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found


def _voc_folder(root: Path) -> Path | None:
    def is_voc(folder: Path) -> bool:
        return (folder / "Annotations").is_dir() and (folder / "JPEGImages").is_dir()

    if is_voc(root):
        return root
    inside = [d for d in sorted(root.iterdir()) if d.is_dir() and is_voc(d)]  # e.g. BCCD's bccd/BCCD/
    return inside[0] if len(inside) == 1 else None


def _voc_parts(main: Path) -> dict[str, str]:
    """{stem: part} from ImageSets/Main; trainval stands for train when there is no train.txt."""
    names = ("train", "val", "test") if (main / "train.txt").is_file() else ("trainval", "test")
    parts: dict[str, str] = {}
    for name in names:
        path = main / f"{name}.txt"
        for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
            if line.split():
                parts.setdefault(line.split()[0], "train" if name == "trainval" else name)
    return parts


def _read_voc(root: Path, notes: _Notes) -> tuple[list[_Raw], list[str] | None]:
    voc = _voc_folder(root) if root.is_dir() else None
    if voc is None:
        raise DataError(f"box_folder: {root} is not a {LAYOUTS['voc']} folder")
    parts = _voc_parts(voc / "ImageSets" / "Main")
    images = _images_by_stem(voc / "JPEGImages")
    annotations = sorted((voc / "Annotations").glob("*.xml"))
    raws = []
    for path in annotations:  # <filename> is only a hint: annotation and image pair by stem
        source = notes.rel(path)
        if path.stem not in images:
            notes.add("annotation files have no image and were left out", source)
            continue
        data = path.read_bytes()
        if any(d in data.replace(b"\x00", b"") for d in (b"<!DOCTYPE", b"<!ENTITY")):  # \x00: UTF-16 files
            notes.add("annotation files declare a DOCTYPE or ENTITY (unsafe entity expansion) and were refused", source)
            continue
        try:
            tree = ET.fromstring(data)
        except ET.ParseError:
            notes.add("annotation files are not valid XML and were skipped", source)
            continue
        raws.append(_voc_record(tree, images[path.stem], source, parts.get(path.stem, ""), notes))
    stems = {path.stem for path in annotations}
    for stem, image in images.items():
        if stem not in stems:
            notes.add("images have no annotation file and were left out", notes.rel(image))
    return raws, None


def _voc_record(tree: ET.Element, image: Path, source: str, part: str, notes: _Notes) -> _Raw:
    size = _numbers([tree.findtext("size/height"), tree.findtext("size/width")], 2)
    height, width = (int(v) for v in size) if size and all(math.isfinite(v) for v in size) else (0, 0)
    raw = _Raw(image, (height, width) if height > 0 and width > 0 else None, [], [], source, part)
    for obj in tree.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            notes.add("boxes without a <name> were dropped", source)
            continue
        raw.boxes.append(_numbers([obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]))
        raw.labels.append(name)
        raw.difficult.append((obj.findtext("difficult") or "0").strip() in ("1", "true"))
    return raw


def _read_coco(root: Path, notes: _Notes) -> tuple[list[_Raw], list[str] | None]:
    files = [root] if root.is_file() else sorted((root / "annotations").glob("*.json"))
    files = [f for f in files if f.name.startswith("instances_")] or files  # not captions_, person_keypoints_
    if not files:
        raise DataError(f"box_folder: {root} is not a {LAYOUTS['coco']} layout")
    names: dict[int, str] = {}
    raws = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            for category in data.get("categories", []):
                names.setdefault(int(category["id"]), str(category["name"]))
            raws += _coco_records(data, path, names, notes)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise DataError(f"box_folder: {path} is not a COCO instances file ({error!r})") from None
    return raws, [names[i] for i in sorted(names)]


def _coco_records(data: dict, path: Path, names: dict[int, str], notes: _Notes) -> list[_Raw]:
    source, base = notes.rel(path), notes.base
    split = path.stem.removeprefix("instances_")  # train2017: COCO's own image folder name
    folders = list(dict.fromkeys([path.parent, base, base / "images", base / "images" / split, base / split]))
    part = next((part for part in SPLITS if part in path.stem.lower()), "")
    if part:
        folders += [base / "images" / part, base / part]
    by_image: dict[int, list[dict]] = {}
    for ann in data.get("annotations", []):
        if ann.get("iscrowd"):
            notes.add("crowd annotations (iscrowd: 1) were skipped", source)
        elif ann.get("category_id") not in names:
            notes.add("boxes with a category_id not in categories were dropped", source)
        else:
            by_image.setdefault(ann["image_id"], []).append(ann)
    raws = []
    for entry in data["images"]:
        image = next((f / entry["file_name"] for f in folders if (f / entry["file_name"]).is_file()), None)
        if image is None:
            notes.add("images named in the JSON are missing and were left out", f"{source} ({entry['file_name']})")
            continue
        height, width = int(entry.get("height") or 0), int(entry.get("width") or 0)
        raw = _Raw(image, (height, width) if height > 0 and width > 0 else None, [], [], source, part)
        for ann in by_image.get(entry["id"], []):
            xywh = _numbers(ann.get("bbox"))
            raw.boxes.append(None if xywh is None else (xywh[0], xywh[1], xywh[0] + xywh[2], xywh[1] + xywh[3]))
            raw.labels.append(names[ann["category_id"]])
        raws.append(raw)
    return raws


def _yolo_names(root: Path) -> list[str] | None:
    """Class names from ROOT/classes.txt or ROOT/data.yaml (``names:`` a list or {id: name})."""
    listed = root / "classes.txt"
    if listed.is_file():
        return [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not (root / "data.yaml").is_file():
        return None
    try:
        names = (yaml.safe_load((root / "data.yaml").read_text(encoding="utf-8")) or {}).get("names")
        if isinstance(names, dict):
            by_id = {int(i): str(name) for i, name in names.items()}
            return [by_id.get(i, str(i)) for i in range(max(by_id, default=-1) + 1)]
    except (yaml.YAMLError, AttributeError, ValueError, TypeError) as error:
        raise DataError(f"box_folder: {root / 'data.yaml'} cannot be read ({error!r})") from None
    return [str(name) for name in names] if isinstance(names, list) else None


def _read_yolo(root: Path, notes: _Notes) -> tuple[list[_Raw], list[str] | None]:
    images, labels = root / "images", root / "labels"
    if not (images.is_dir() and labels.is_dir()):
        raise DataError(f"box_folder: {root} is not a {LAYOUTS['yolo']} layout")
    folders = [(images / f, labels / f, part) for part, fs in YOLO_SPLIT_FOLDERS.items() for f in fs]
    folders = [folder for folder in folders if folder[0].is_dir()] or [(images, labels, "")]
    names = _yolo_names(root)
    raws, seen = [], set()
    for image_dir, label_dir, part in folders:
        for image in _images_by_stem(image_dir).values():
            size = _image_size(image)
            if size is None:
                notes.add("images could not be read and were left out", notes.rel(image))
                continue
            raw = _yolo_record(image, label_dir / f"{image.stem}.txt", size, part, names, notes)
            seen.update(raw.labels)
            raws.append(raw)
    if names is None:  # no names in the files: the class ids, as text
        names = [str(i) for i in range(max((int(label) for label in seen), default=-1) + 1)]
    return raws, names


def _yolo_record(
    image: Path, label: Path, size: tuple[int, int], part: str, names: list[str] | None, notes: _Notes
) -> _Raw:
    """Boxes from a label file of ``class cx cy w h`` lines, normalised to [0, 1]; no file: no boxes."""
    height, width = size
    raw = _Raw(image, size, [], [], notes.rel(label), part)
    lines = label.read_text(encoding="utf-8").splitlines() if label.is_file() else []
    for line in (line.split() for line in lines if line.strip()):
        numbers = _numbers(line, 5)
        if numbers is None:
            notes.add(UNPARSEABLE, raw.source)
            continue
        known = numbers[0].is_integer() and numbers[0] >= 0 and (names is None or numbers[0] < len(names))
        if not known:
            notes.add("boxes with a class id that the class names do not cover were dropped", raw.source)
            continue
        cx, cy, w, h = numbers[1:]
        raw.boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
        raw.labels.append(str(int(numbers[0])) if names is None else names[int(numbers[0])])
    return raw


READERS = {"voc": _read_voc, "coco": _read_coco, "yolo": _read_yolo}  # format -> (records, class names or None)
