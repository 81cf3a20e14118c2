"""mask_folder: images with segmentation masks, written here as tiny PNG/JPEG files with exact
masks (a rectangle and a disc on a dark ground). Layouts (flat, split folders, CamVid's
``val/`` + ``valannot/``), mask formats (index, binary, JPEG, palette given and found),
void values, sizes and crops keeping labels on their pixels, warnings, statistics from the
train split, per-pixel class weights, the config section, and the real CamVid when present."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchkeel.config import load_config
from torchkeel.data import load
from torchkeel.data.masks import default_palette
from torchkeel.data.weights import balanced_weights
from torchkeel.errors import ConfigError, DataError, DataWarning

COLOURS = np.array([[20, 20, 30], [200, 40, 40], [40, 200, 40]], dtype=np.uint8)  # ground, rectangle, disc
CAMVID = Path(__file__).resolve().parents[1] / "data" / "camvid"


def scene(seed: int, size: tuple[int, int] = (24, 32)) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and its (H, W) uint8 mask: 0 ground, 1 rectangle, 2 disc."""
    rng = np.random.default_rng(seed)
    h, w = size
    mask = np.zeros(size, dtype=np.uint8)
    top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
    mask[top : top + h // 3, left : left + w // 3] = 1
    cy, cx, r = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4), h // 5
    yy, xx = np.mgrid[:h, :w]
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
    image = COLOURS[mask] + rng.integers(0, 12, (h, w, 3), dtype=np.uint8)
    return image, mask


def write_pairs(
    images: Path,
    masks: Path,
    n: int,
    seed: int = 0,
    image_ext: str = ".png",
    mask_ext: str = ".png",
    mask_of=Image.fromarray,
    stem_suffix: str = "",
    size: tuple[int, int] = (24, 32),
) -> dict[str, np.ndarray]:
    """``n`` pairs; returns each image's file name -> its true mask."""
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        image, mask = scene(seed * 1000 + i, size)
        name = f"{seed}_{i:03d}"
        Image.fromarray(image).save(images / f"{name}{image_ext}", quality=95)
        out = mask_of(mask)
        out.save(masks / f"{name}{stem_suffix}{mask_ext}", quality=95)
        truth[f"{name}{image_ext}"] = mask
    return truth


def data(root: Path, **extra):
    cfg = {"name": "mask_folder", "root": str(root), "val_fraction": 0.2, "test_fraction": 0.2, **extra}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a test that expects a warning says so
        return load(cfg, seed=0)


def check_truth(bundle, truth: dict[str, np.ndarray], mapping=None) -> None:
    for split in bundle.splits().values():
        for source, y in zip(split.sources, split.y, strict=True):
            want = truth[Path(source).name]
            want = mapping[want] if mapping is not None else want
            np.testing.assert_array_equal(y.numpy(), want, err_msg=source)


def raw_pixels(bundle, split) -> torch.Tensor:
    mean, std = torch.tensor(bundle.spec.mean).view(1, -1, 1, 1), torch.tensor(bundle.spec.std).view(1, -1, 1, 1)
    return split.x.double() * std + mean  # back to [0, 1]


@pytest.mark.parametrize("mode", ["L", "P"])
def test_flat_index_masks(tmp_path: Path, mode: str):
    def as_mode(mask: np.ndarray) -> Image.Image:
        if mode == "L":
            return Image.fromarray(mask)
        img = Image.fromarray(mask, mode="P")
        img.putpalette([255, 255, 255, 9, 9, 9, 128, 128, 128])  # colours unlike the indices: read the indices
        return img

    truth = write_pairs(tmp_path / "images", tmp_path / "masks", 10, mask_of=as_mode)
    bundle = data(tmp_path)
    spec = bundle.spec
    assert (spec.name, spec.kind, spec.task) == ("mask_folder", "image", "segmentation")
    assert spec.input_shape == (3, 24, 32) and spec.classes == ["class_0", "class_1", "class_2"]
    assert spec.extra == {"ignore_index": 255, "flip": True, "palette": default_palette(3), "resize": "crop"}
    assert [len(s) for s in bundle.splits().values()] == [6, 2, 2]
    assert bundle.train.x.dtype == torch.float32 and bundle.train.y.dtype == torch.int64
    assert bundle.train.y.shape == (6, 24, 32)
    check_truth(bundle, truth)
    # the pixels kept their meaning: the rectangle is red, the disc green, on the same pixels as the mask
    raw = raw_pixels(bundle, bundle.train)
    seen = torch.zeros_like(bundle.train.y)
    seen[raw[:, 0] > 0.5], seen[raw[:, 1] > 0.5] = 1, 2
    assert torch.equal(seen, bundle.train.y)


def test_split_folders_labels_folder_and_mask_suffix(tmp_path: Path):
    truth = {}
    for seed, split, n in ((0, "train", 6), (1, "val", 2), (2, "test", 3)):
        truth |= write_pairs(
            tmp_path / "images" / split, tmp_path / "labels" / split, n, seed, image_ext=".jpg", stem_suffix="_mask"
        )
    bundle = data(tmp_path)
    assert [len(s) for s in bundle.splits().values()] == [6, 2, 3]
    assert all(Path(s).parent.name == "test" for s in bundle.test.sources)
    check_truth(bundle, truth)


def test_camvid_layout_needs_a_train_split(tmp_path: Path):
    truth = write_pairs(tmp_path / "val", tmp_path / "valannot", 8, 0)
    truth |= write_pairs(tmp_path / "test", tmp_path / "testannot", 4, 1)
    with pytest.raises(DataError, match=r"no train split.*data\.masks\.splits"):
        data(tmp_path)
    bundle = data(tmp_path, val_fraction=0.25, masks={"splits": {"train": "val", "test": "test"}})
    assert [len(s) for s in bundle.splits().values()] == [6, 2, 4]  # val/ is train, a quarter of it held out
    assert all(Path(s).parent.name == "test" for s in bundle.test.sources)
    check_truth(bundle, truth)
    with pytest.raises(DataError, match="maps val: valid"):
        data(tmp_path, masks={"splits": {"train": "val", "val": "valid"}})


def test_folders_named_in_the_config(tmp_path: Path):
    write_pairs(tmp_path / "JPEGImages", tmp_path / "SegmentationClass", 6, 0)
    write_pairs(tmp_path / "JPEGImages_test", tmp_path / "SegmentationClass_test", 3, 1)
    with pytest.raises(DataError, match=r"accepted layouts: ROOT/images/ \+ ROOT/masks/"):
        data(tmp_path)
    masks = {
        "images": "JPEGImages{split}",
        "masks": "SegmentationClass{split}",
        "splits": {"train": "", "test": "_test"},
    }
    bundle = data(tmp_path, masks=masks)
    assert [len(s) for s in bundle.splits().values()] == [5, 1, 3]


def binary_png(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(((mask > 0) * 255).astype(np.uint8))


def test_binary_masks_0_255(tmp_path: Path):
    truth = write_pairs(tmp_path / "images", tmp_path / "masks", 8, mask_of=binary_png)
    bundle = data(tmp_path)
    assert bundle.spec.classes == ["background", "foreground"]
    check_truth(bundle, truth, np.array([0, 1, 1]))


def test_binary_masks_0_1_and_explicit_format(tmp_path: Path):
    truth = write_pairs(tmp_path / "images", tmp_path / "masks", 8, mask_of=lambda m: Image.fromarray(m.clip(0, 1)))
    assert data(tmp_path).spec.classes == ["class_0", "class_1"]  # two indices: an index mask
    bundle = data(tmp_path, masks={"format": "binary", "classes": ["sea", "ship"]})
    assert bundle.spec.classes == ["sea", "ship"]
    check_truth(bundle, truth, np.array([0, 1, 1]))


def test_jpeg_masks_are_thresholded(tmp_path: Path):
    truth = write_pairs(tmp_path / "images", tmp_path / "masks", 8, mask_ext=".jpg", mask_of=binary_png)
    with pytest.warns(DataWarning, match=r"8 masks are JPEG, thresholded at 128"):
        bundle = load({"name": "mask_folder", "root": str(tmp_path)})
    assert bundle.spec.classes == ["background", "foreground"]
    for split in bundle.splits().values():
        want = torch.stack([torch.from_numpy(truth[Path(s).name] > 0) for s in split.sources]).long()
        assert (split.y == want).double().mean() > 0.98  # compression moves a few edge pixels
    with pytest.raises(DataError, match="JPEG mask"):
        load({"name": "mask_folder", "root": str(tmp_path), "masks": {"format": "index"}})


def coloured(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], dtype=np.uint8)[mask])


def test_palette_given(tmp_path: Path):
    truth = write_pairs(tmp_path / "images", tmp_path / "masks", 8, mask_of=coloured)
    palette = [[0, 0, 0], [0, 0, 255], [255, 0, 0]]  # the disc's blue is class 1 here
    bundle = data(tmp_path, masks={"palette": palette, "classes": ["ground", "disc", "box"]})
    assert bundle.spec.classes == ["ground", "disc", "box"] and bundle.spec.extra["palette"] == palette
    check_truth(bundle, truth, np.array([0, 2, 1]))
    void = data(tmp_path, masks={"palette": palette[:2], "ignore_index": [255, 0, 0]})  # the box is void here
    check_truth(void, truth, np.array([0, 255, 1]))
    with pytest.raises(DataError, match=r"ignore_index 11: give an \[r, g, b\] colour"):
        data(tmp_path, masks={"palette": palette, "ignore_index": 11})


def test_palette_found_in_the_train_masks(tmp_path: Path):
    truth = write_pairs(tmp_path / "images", tmp_path / "masks", 8, mask_of=coloured)
    with pytest.warns(DataWarning, match=r"each of the train masks' 3 colours is a class.*#000000, #0000ff, #ff0000"):
        bundle = load({"name": "mask_folder", "root": str(tmp_path)})
    assert bundle.spec.classes == ["#000000", "#0000ff", "#ff0000"]
    assert bundle.spec.extra["palette"] == [[0, 0, 0], [0, 0, 255], [255, 0, 0]]
    check_truth(bundle, truth, np.array([0, 2, 1]))


def test_too_many_colours_ask_for_a_palette(tmp_path: Path):
    write_pairs(tmp_path / "images", tmp_path / "masks", 4, mask_of=lambda m: Image.fromarray(scene(int(m.sum()))[0]))
    with pytest.raises(DataError, match="set data.masks.palette"):
        load({"name": "mask_folder", "root": str(tmp_path)})


def with_void_border(value: int):
    def mask_of(mask: np.ndarray) -> Image.Image:
        out = mask.copy()
        out[0, :] = value
        return Image.fromarray(out)

    return mask_of


def test_ignore_index_is_remapped_to_255(tmp_path: Path):
    truth = write_pairs(tmp_path / "images", tmp_path / "masks", 8, mask_of=with_void_border(11))
    bundle = data(tmp_path, masks={"ignore_index": 11})
    assert bundle.spec.classes == ["class_0", "class_1", "class_2"]  # the void value is no class
    for split in bundle.splits().values():
        assert (split.y[:, 0] == 255).all() and (split.y[:, 1:] < 3).all()
        for source, y in zip(split.sources, split.y, strict=True):
            np.testing.assert_array_equal(y[1:].numpy(), truth[Path(source).name][1:])


def test_255_without_ignore_index_is_void_and_said(tmp_path: Path):
    write_pairs(tmp_path / "images", tmp_path / "masks", 6, mask_of=with_void_border(255))
    with pytest.warns(DataWarning, match=r"6 masks have the value 255, read as void"):
        bundle = load({"name": "mask_folder", "root": str(tmp_path)})
    assert bundle.spec.num_classes == 3 and (bundle.train.y[:, 0] == 255).all()


def test_values_beyond_the_classes_become_void(tmp_path: Path):
    truth = write_pairs(tmp_path / "images", tmp_path / "masks", 8)
    with pytest.warns(DataWarning, match=r"8 masks have values that are no class \(0-1\).*\(e\.g\. masks/0_000\.png"):
        bundle = load({"name": "mask_folder", "root": str(tmp_path), "masks": {"classes": ["ground", "box"]}})
    check_truth(bundle, truth, np.array([0, 1, 255]))


def test_mask_of_another_size_is_resized_nearest(tmp_path: Path):
    def doubled(mask: np.ndarray) -> Image.Image:  # the mask at twice the image's resolution
        return Image.fromarray(mask.repeat(2, 0).repeat(2, 1))

    truth = write_pairs(tmp_path / "images", tmp_path / "masks", 6, mask_of=doubled)
    with pytest.warns(DataWarning, match=r"6 masks differ in size from their image and were resized"):
        bundle = load({"name": "mask_folder", "root": str(tmp_path)})
    check_truth(bundle, truth)


@pytest.fixture
def mixed_sizes(tmp_path: Path) -> tuple[Path, dict]:
    truth = write_pairs(tmp_path / "images", tmp_path / "masks", 6, 0, size=(24, 32))
    truth |= write_pairs(tmp_path / "images", tmp_path / "masks", 6, 1, size=(40, 30))
    return tmp_path, truth


@pytest.mark.parametrize("resize", ["crop", "stretch"])
def test_mixed_sizes_resize_images_and_masks_alike(mixed_sizes, resize: str):
    root, _ = mixed_sizes
    with pytest.raises(DataError, match=r"images differ in size.*set data\.image\.size"):
        data(root)
    bundle = data(root, image={"size": [18, 20], "resize": resize})
    assert bundle.spec.input_shape == (3, 18, 20) and bundle.spec.extra["resize"] == resize
    for split in bundle.splits().values():
        raw = raw_pixels(bundle, split)  # (N, 3, H, W) in [0, 1]
        green, red = raw[:, 1] > 0.5, raw[:, 0] > 0.5
        # labels stay on their pixels: the disc's mask lands on green pixels, the rectangle's on red ones
        # (a few blended edge pixels of the antialiased resize may fall either way)
        assert (green == (split.y == 2)).double().mean() > 0.98
        assert (red == (split.y == 1)).double().mean() > 0.98
        assert ((split.y == 2) & green).sum() > 0.9 * (split.y == 2).sum()


def test_crop_takes_the_centre(tmp_path: Path):
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    mask = np.zeros((20, 40), dtype=np.uint8)
    mask[:, 10:30] = 1  # the centre half: after scaling to 10 high, the 10x10 centre crop is all class 1
    image[mask == 1] = 255
    for i, folder in enumerate(("images", "masks")):
        (tmp_path / folder).mkdir()
        for j in range(5):
            Image.fromarray(image if i == 0 else mask).save(tmp_path / folder / f"{j}.png")
    mask[0, 0] = 2  # another class somewhere outside the crop
    Image.fromarray(mask).save(tmp_path / "masks" / "0.png")
    bundle = data(tmp_path, image={"size": 10}, test_fraction=0.2, val_fraction=0.0)
    assert bundle.spec.num_classes == 3
    assert (bundle.train.y == 1).all() and (bundle.test.y == 1).all()
    stretched = data(tmp_path, image={"size": 10, "resize": "stretch"}, test_fraction=0.2, val_fraction=0.0)
    assert (stretched.train.y[:, :, :2] == 0).all() and (stretched.train.y[:, :, 3:7] == 1).all()


def test_missing_masks_and_images_are_warned_and_dropped(tmp_path: Path):
    write_pairs(tmp_path / "images", tmp_path / "masks", 10)
    (tmp_path / "masks" / "0_000.png").unlink()
    (tmp_path / "masks" / "0_001.png").unlink()
    (tmp_path / "images" / "0_009.png").unlink()
    (tmp_path / "masks" / "notes.txt").write_text("not an image")
    with pytest.warns(DataWarning) as caught:
        bundle = load({"name": "mask_folder", "root": str(tmp_path)})
    messages = [str(w.message) for w in caught]
    assert any(
        "2 images have no mask and were left out (e.g. images/0_000.png, images/0_001.png)" in m for m in messages
    )
    assert any("1 masks have no image and were left out (e.g. masks/0_009.png)" in m for m in messages)
    assert any("1 files that are not images were skipped" in m for m in messages)
    assert sum(len(s) for s in bundle.splits().values()) == 7


def test_classes_txt(tmp_path: Path):
    write_pairs(tmp_path / "images", tmp_path / "masks", 6)
    (tmp_path / "classes.txt").write_text("ground\nbox\ndisc\n\n")
    assert data(tmp_path).spec.classes == ["ground", "box", "disc"]
    assert data(tmp_path, masks={"classes": ["a", "b", "c"]}).spec.classes == ["a", "b", "c"]  # the config wins


def test_statistics_come_from_the_train_split_only(tmp_path: Path):
    write_pairs(tmp_path / "images" / "train", tmp_path / "masks" / "train", 6, 0)
    write_pairs(tmp_path / "images" / "test", tmp_path / "masks" / "test", 3, 1)
    for path in (tmp_path / "images" / "test").iterdir():  # a much brighter test split
        Image.fromarray(np.full((24, 32, 3), 250, dtype=np.uint8)).save(path)
    bundle = data(tmp_path, val_fraction=0.0)
    train = torch.stack([torch.from_numpy(np.array(Image.open(s))) for s in bundle.train.sources]).double() / 255
    np.testing.assert_allclose(bundle.spec.mean, train.mean((0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(bundle.spec.std, train.reshape(-1, 3).std(0), rtol=1e-5)
    assert abs(bundle.train.x.mean().item()) < 1e-5 and bundle.test.x.mean() > 2  # normalised with train's


def test_class_weights_count_pixels_without_void(tmp_path: Path):
    write_pairs(tmp_path / "images", tmp_path / "masks", 8, mask_of=with_void_border(11))
    bundle = data(tmp_path, class_weights=True, masks={"ignore_index": 11})
    y = bundle.train.y.flatten()
    counts = torch.bincount(y[y != 255], minlength=3).double()
    expected = counts.sum() / (3 * counts)
    np.testing.assert_allclose(bundle.spec.extra["class_weights"], expected.numpy(), rtol=1e-5)
    digits = load({"name": "digits", "class_weights": True})  # classification: the same as before
    assert digits.spec.extra["class_weights"] == balanced_weights(digits.train.y, 10)


def test_config_section(tmp_path: Path):
    overrides = ["data.name=mask_folder", f"data.root={tmp_path}", "data.masks={splits: {train: val, test: test}}"]
    cfg = load_config(None, [*overrides, "data.masks.ignore_index=11", "data.masks.palette=[[0, 0, 0], [9, 9, 9]]"])
    assert cfg.data.masks.splits == {"train": "val", "test": "test"} and cfg.data.masks.palette == [
        (0, 0, 0),
        (9, 9, 9),
    ]
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    for bad, fragment in [
        (["data.name=image_folder", "data.root=x", "data.masks.format=index"], "data.masks is for the segmentation"),
        (["data.name=mask_folder"], "set data.root"),
        ([*overrides[:2], "data.masks.splits={val: val}"], "map train to a folder"),
        ([*overrides[:2], "data.masks.splits={train: a, tset: b}"], "no split tset"),
        ([*overrides[:2], "data.masks.fromat=index"], "did you mean 'data.masks.format'"),
        ([*overrides[:2], "data.masks.palette=[[0, 0, 300]]"], "data.masks.palette"),
        ([*overrides[:2], "data.masks.images=imgs"], "together"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            load_config(None, bad)


@pytest.mark.realdata
@pytest.mark.skipif(not (CAMVID / "valannot").is_dir(), reason="CamVid is not in data/camvid")
def test_real_camvid():
    bundle = load(
        {
            "name": "mask_folder",
            "root": str(CAMVID),
            "val_fraction": 0.0,
            "image": {"size": [36, 48]},
            "masks": {"splits": {"train": "val", "test": "test"}, "ignore_index": 11},
        }
    )
    assert (len(bundle.train), len(bundle.test)) == (101, 62) and bundle.val is None
    assert bundle.spec.num_classes == 11 and bundle.spec.input_shape == (3, 36, 48)
    assert set(bundle.train.y.unique().tolist()) == set(range(11)) | {255}
