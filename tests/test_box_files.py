"""box_files: VOC, COCO and YOLO annotations read into records, every bad box repaired or dropped
with one counted warning (files written in tmp_path; BCCD checked when it is beside the project)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
from PIL import Image

from torchkeel.data.box_files import read_box_set
from torchkeel.errors import ConfigError, DataError, DataWarning

BCCD = Path(__file__).parent.parent / "data" / "bccd"


def image(path: Path, width: int, height: int) -> Path:
    """A small black image of ``width`` x ``height`` (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height)).save(path)
    return path


def voc_xml(path: Path, objects: list[tuple], size: tuple[int, int] | None = (80, 100), head: str = "") -> None:
    """A VOC annotation; ``objects`` are (name, xmin, ymin, xmax, ymax[, difficult]); size (h, w)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = f"<size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>" if size else ""
    body = "".join(
        f"<object><name>{name}</name><difficult>{int(rest[4]) if len(rest) > 4 else 0}</difficult><bndbox>"
        f"<xmin>{rest[0]}</xmin><ymin>{rest[1]}</ymin><xmax>{rest[2]}</xmax><ymax>{rest[3]}</ymax></bndbox></object>"
        for name, *rest in objects
    )
    path.write_text(f"{head}<annotation><filename>other.jpg</filename>{dims}{body}</annotation>")


def voc_one(root: Path, box: tuple, size: tuple[int, int] = (80, 100)) -> Path:
    """A VOC folder of one 100 x 80 image with one 'cell' box plus a valid 'cell' box."""
    image(root / "JPEGImages" / "a.jpg", size[1], size[0])
    voc_xml(root / "Annotations" / "a.xml", [("cell", *box), ("cell", 1, 2, 30, 40)], size)
    return root


def test_voc_boxes_classes_splits_and_background_images(tmp_path):
    image(tmp_path / "JPEGImages" / "b.jpg", 100, 80)
    image(tmp_path / "JPEGImages" / "a.png", 100, 80)
    image(tmp_path / "JPEGImages" / "c.jpg", 100, 80)
    voc_xml(tmp_path / "Annotations" / "b.xml", [("wbc", 10, 20, 50, 60), ("rbc", "1.5", "2.25", "30.5", "40", 1)])
    voc_xml(tmp_path / "Annotations" / "a.xml", [("platelet", 0, 0, 100, 80)])
    voc_xml(tmp_path / "Annotations" / "c.xml", [])  # a background image: kept, no boxes
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for name, stems in {"train": "a\nb\n", "val": "c\n", "test": "", "trainval": "a\nb\nc\n"}.items():
        (main / f"{name}.txt").write_text(stems)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to repair: no warning
        boxes = read_box_set(tmp_path)
    assert boxes.format == "voc" and boxes.repaired == []
    assert boxes.classes == ["platelet", "rbc", "wbc"]  # sorted names: VOC defines no order
    a, b, c = boxes.records
    assert [Path(r.image).name for r in boxes.records] == ["a.png", "b.jpg", "c.jpg"]
    assert Path(a.image).is_absolute() and a.size == (80, 100)
    assert b.boxes == [(10.0, 20.0, 50.0, 60.0), (1.5, 2.25, 30.5, 40.0)] and b.labels == ["wbc", "rbc"]
    assert b.difficult == [False, True]
    assert (c.boxes, c.labels, c.difficult) == ([], [], [])
    assert [r.part for r in boxes.records] == ["train", "train", "val"]


def test_voc_nested_folder_trainval_and_size_from_the_image_header(tmp_path):
    voc = tmp_path / "BCCD"
    image(voc / "JPEGImages" / "a.png", 64, 48)
    image(voc / "JPEGImages" / "b.jpg", 64, 48)
    voc_xml(voc / "Annotations" / "a.xml", [("x", 1, 1, 60, 40)], size=None)  # no <size>: the header
    voc_xml(voc / "Annotations" / "b.xml", [("x", 1, 1, 60, 40)], size=(0, 0))  # 0: the header too
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("a\n")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("b\n")
    boxes = read_box_set(tmp_path, format="voc")
    assert [(r.size, r.part) for r in boxes.records] == [((48, 64), "train"), ((48, 64), "test")]


def test_voc_unpaired_files_are_counted(tmp_path):
    image(tmp_path / "JPEGImages" / "a.jpg", 100, 80)
    image(tmp_path / "JPEGImages" / "lone.jpg", 100, 80)
    voc_xml(tmp_path / "Annotations" / "a.xml", [("x", 1, 1, 60, 40)])
    voc_xml(tmp_path / "Annotations" / "gone.xml", [("x", 1, 1, 60, 40)])
    with pytest.warns(DataWarning) as caught:
        boxes = read_box_set(tmp_path)
    messages = [str(w.message) for w in caught]
    assert "box_folder: 1 annotation files have no image and were left out (e.g. Annotations/gone.xml)" in messages
    assert "box_folder: 1 images have no annotation file and were left out (e.g. JPEGImages/lone.jpg)" in messages
    assert len(boxes.records) == 1 and boxes.repaired == messages


def test_voc_doctype_and_entity_files_are_refused(tmp_path):
    image(tmp_path / "JPEGImages" / "a.jpg", 100, 80)
    image(tmp_path / "JPEGImages" / "bomb.jpg", 100, 80)
    voc_xml(tmp_path / "Annotations" / "a.xml", [("x", 1, 1, 60, 40)])
    laughs = '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
    voc_xml(tmp_path / "Annotations" / "bomb.xml", [("&lol2;", 1, 1, 60, 40)], head=laughs)
    with pytest.warns(DataWarning, match=r"1 annotation files declare a DOCTYPE .*\(e\.g\. Annotations/bomb\.xml\)"):
        boxes = read_box_set(tmp_path)
    assert [Path(r.image).name for r in boxes.records] == ["a.jpg"]


def coco_json(path: Path, images: list[dict], annotations: list[dict], categories: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


CATEGORIES = [{"id": 7, "name": "zebra"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


def test_coco_odd_category_ids_crowds_parts_and_image_folders(tmp_path):
    image(tmp_path / "train2017" / "t.jpg", 100, 80)  # COCO's own layout: ROOT/train2017/
    image(tmp_path / "images" / "val" / "v.png", 50, 40)  # ROOT/images/<split>/
    train = [
        {"id": 1, "image_id": 5, "category_id": 7, "bbox": [10, 20, 30, 40], "iscrowd": 0},
        {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0.5, 1.5, 10.25, 5], "iscrowd": 0},
        {"id": 3, "image_id": 5, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1},
    ]
    images = [{"id": 5, "file_name": "t.jpg", "width": 100, "height": 80}]
    coco_json(tmp_path / "annotations" / "instances_train2017.json", images, train, CATEGORIES)
    val = [{"id": 9, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4]}]
    coco_json(tmp_path / "annotations" / "instances_val2017.json", [{"id": 2, "file_name": "v.png"}], val, CATEGORIES)
    with pytest.warns(DataWarning, match=r"1 crowd annotations \(iscrowd: 1\) were skipped"):
        boxes = read_box_set(tmp_path)
    assert boxes.format == "coco" and boxes.classes == ["person", "car", "zebra"]  # by id: 1, 3, 7
    v, t = boxes.records  # sorted by path: images/val/v.png, train2017/t.jpg
    assert Path(t.image) == tmp_path / "train2017" / "t.jpg" and t.part == "train" and t.size == (80, 100)
    assert t.boxes == [(10.0, 20.0, 40.0, 60.0), (0.5, 1.5, 10.75, 6.5)] and t.labels == ["zebra", "car"]
    assert t.difficult == [False, False]
    assert v.part == "val" and v.size == (40, 50) and v.boxes == [(1.0, 2.0, 4.0, 6.0)] and v.labels == ["person"]


def test_coco_json_file_as_root_with_images_beside_it(tmp_path):
    image(tmp_path / "pic.jpg", 100, 80)
    path = coco_json(
        tmp_path / "boxes.json",
        [{"id": 1, "file_name": "pic.jpg", "width": 100, "height": 80}],
        [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4]}],
        CATEGORIES,
    )
    boxes = read_box_set(path)
    assert boxes.format == "coco" and boxes.records[0].boxes == [(1.0, 2.0, 4.0, 6.0)] and boxes.records[0].part == ""


def test_yolo_normalised_boxes_to_pixels_with_data_yaml_dict_names(tmp_path):
    image(tmp_path / "images" / "train" / "a.jpg", 200, 100)
    image(tmp_path / "images" / "val" / "b.png", 40, 20)
    image(tmp_path / "images" / "val" / "empty.png", 40, 20)  # no label file: no boxes
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("2 0.5 0.5 0.25 0.5\n0 0.125 0.25 0.25 0.5\n\n")
    (tmp_path / "labels" / "val" / "b.txt").write_text("1 0.5 0.5 1 1\n")
    (tmp_path / "data.yaml").write_text("path: .\nnames:\n  0: cat\n  1: dog\n  2: bird\n")
    boxes = read_box_set(tmp_path)
    assert boxes.format == "yolo" and boxes.classes == ["cat", "dog", "bird"]
    a, b, empty = boxes.records
    assert a.part == "train" and a.size == (100, 200)
    assert a.boxes == [(75.0, 25.0, 125.0, 75.0), (0.0, 0.0, 50.0, 50.0)] and a.labels == ["bird", "cat"]
    assert b.part == "val" and b.boxes == [(0.0, 0.0, 40.0, 20.0)] and b.labels == ["dog"]
    assert empty.boxes == [] and empty.part == "val"


@pytest.mark.parametrize("names", ["classes.txt", "data.yaml", None])
def test_yolo_flat_folders_and_class_names(tmp_path, names):
    image(tmp_path / "images" / "a.jpg", 200, 100)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    if names == "classes.txt":
        (tmp_path / "classes.txt").write_text("cat\ndog\n")
    elif names == "data.yaml":
        (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    boxes = read_box_set(tmp_path, format="yolo")
    expected = ["0", "1"] if names is None else ["cat", "dog"]
    assert boxes.classes == expected and boxes.records[0].labels == [expected[1]]
    assert boxes.records[0].boxes == [(50.0, 25.0, 150.0, 75.0)] and boxes.records[0].part == ""


@pytest.mark.parametrize(
    ("box", "kept", "message"),
    [
        ((50, 60, 10, 20), (10.0, 20.0, 50.0, 60.0), r"1 boxes with inverted corners \(x2 < x1 .*\) were swapped"),
        ((-5, 10, 120, 50), (0.0, 10.0, 100.0, 50.0), "1 boxes partly outside the image were clipped to it"),
        ((30, 30, 30, 40), None, "1 boxes of zero area were dropped"),
        ((20, 30, 20.5, 40), None, "1 boxes of zero area were dropped"),  # under one pixel wide
        ((150, 10, 180, 40), None, "1 boxes entirely outside the image were dropped"),
        ((-30, -30, -10, -10), None, "1 boxes entirely outside the image were dropped"),
        ((10, "nan", 20, 30), None, r"1 boxes with non-finite numbers \(NaN, inf\) were dropped"),
        ((10, 20, "inf", 30), None, r"1 boxes with non-finite numbers \(NaN, inf\) were dropped"),
        ((10, "abc", 20, 30), None, "1 boxes with unparseable numbers were dropped"),
        ((10, "", 20, 30), None, "1 boxes with unparseable numbers were dropped"),
    ],
)
def test_every_bad_box_is_repaired_or_dropped_with_one_warning(tmp_path, box, kept, message):
    voc_one(tmp_path, box)  # a 100 x 80 image
    with pytest.warns(DataWarning, match=message + r" \(e\.g\. Annotations/a\.xml\)$"):
        boxes = read_box_set(tmp_path)
    record = boxes.records[0]
    assert record.boxes == ([kept] if kept else []) + [(1.0, 2.0, 30.0, 40.0)]
    assert len(record.labels) == len(record.difficult) == len(record.boxes)
    assert len(boxes.repaired) == 1 and re.search(message, boxes.repaired[0])


def test_one_warning_per_kind_counts_boxes_and_names_three_files(tmp_path):
    for stem in "abcd":
        image(tmp_path / "JPEGImages" / f"{stem}.jpg", 100, 80)
        voc_xml(tmp_path / "Annotations" / f"{stem}.xml", [("x", 5, 5, 5, 9), ("x", 9, 9, 9, 9), ("x", 1, 1, 9, 9)])
    with pytest.warns(DataWarning) as caught:
        boxes = read_box_set(tmp_path)
    assert [str(w.message) for w in caught] == [
        "box_folder: 8 boxes of zero area were dropped (e.g. Annotations/a.xml, Annotations/b.xml, Annotations/c.xml)"
    ]
    assert [len(r.boxes) for r in boxes.records] == [1, 1, 1, 1]


def test_yolo_unparseable_lines_and_unknown_class_ids_are_dropped(tmp_path):
    image(tmp_path / "images" / "a.jpg", 200, 100)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n0 0.5 x 0.5 0.5\n5 0.5 0.5 0.5 0.5\n0 0.5 0.5\n")
    (tmp_path / "classes.txt").write_text("cat\n")
    with pytest.warns(DataWarning) as caught:
        boxes = read_box_set(tmp_path)
    assert {str(w.message) for w in caught} == {
        "box_folder: 2 boxes with unparseable numbers were dropped (e.g. labels/a.txt)",
        "box_folder: 1 boxes with a class id that the class names do not cover were dropped (e.g. labels/a.txt)",
    }
    assert boxes.records[0].boxes == [(50.0, 25.0, 150.0, 75.0)]


def test_classes_argument_orders_and_filters(tmp_path):
    image(tmp_path / "JPEGImages" / "a.jpg", 100, 80)
    voc_xml(tmp_path / "Annotations" / "a.xml", [("rbc", 1, 1, 9, 9), ("wbc", 2, 2, 9, 9), ("junk", 3, 3, 9, 9)])
    with pytest.warns(DataWarning, match=r"^box_folder: 1 boxes of classes not in the classes list were dropped"):
        boxes = read_box_set(tmp_path, classes=["wbc", "rbc", "platelet"])
    assert boxes.classes == ["wbc", "rbc", "platelet"] and boxes.records[0].labels == ["rbc", "wbc"]


def test_auto_detect_failure_names_the_layouts(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError) as caught:
        read_box_set(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path) in message
    assert all(layout in message for layout in ("Pascal VOC", "COCO", "YOLO", "Annotations", "labels"))


def test_bad_arguments_and_empty_sets_raise_one_line(tmp_path):
    with pytest.raises(ConfigError, match="unknown box format 'vco'; did you mean 'voc'"):
        read_box_set(tmp_path, format="vco")
    with pytest.raises(DataError, match="does not exist"):
        read_box_set(tmp_path / "missing")
    with pytest.raises(DataError, match="is not a Pascal VOC"):
        read_box_set(tmp_path, format="voc")
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(DataError, match="no images with annotations under"):
        read_box_set(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json is not a COCO instances file"):
        read_box_set(tmp_path / "bad.json")


@pytest.mark.realdata
@pytest.mark.skipif(not (BCCD / "BCCD" / "Annotations").is_dir(), reason="BCCD is not in data/bccd")
def test_real_bccd():
    with pytest.warns(DataWarning) as caught:
        boxes = read_box_set(BCCD)
    assert [str(w.message) for w in caught] == [
        "box_folder: 2 boxes of zero area were dropped "
        "(e.g. BCCD/Annotations/BloodImage_00338.xml, BCCD/Annotations/BloodImage_00343.xml)"
    ]
    assert boxes.format == "voc" and boxes.classes == ["Platelets", "RBC", "WBC"]
    assert len(boxes.records) == 364 and sum(len(r.boxes) for r in boxes.records) == 4888 - 2
    assert [sum(r.part == part for r in boxes.records) for part in ("train", "val", "test")] == [205, 87, 72]
    assert {r.size for r in boxes.records} == {(480, 640)}
