"""The image sections of the data config: augmentation, decoding, masks and boxes.

Split from config_data.py, which imports and re-exports every name here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from torchkeel.config_base import Strict


def positive_sides(size: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
    """An image size (one side or height and width) of positive pixel counts, or None."""
    if any(side < 1 for side in ((size,) if isinstance(size, int) else size or ())):
        raise ValueError("sizes must be positive pixel counts")
    return size


ImageSize = Annotated[int | tuple[int, int] | None, AfterValidator(positive_sides)]


class AugmentConfig(Strict):
    """Batched, per-sample random augmentation of training images on the device."""

    crop_size: ImageSize = Field(None, description="train on random (height, width) windows; evaluate whole images")
    crop: int = Field(0, ge=0, description="pad by this many pixels, then random-crop back")
    flip: bool | None = Field(
        None, description="random horizontal flip; null: on for photos, off for digits and characters"
    )
    rotate: float = Field(0.0, ge=0.0, le=180.0, description="random rotation up to this many degrees either way")
    translate: float = Field(0.0, ge=0.0, lt=0.5, description="random shift up to this fraction of the size")
    scale: float = Field(0.0, ge=0.0, lt=1.0, description="random zoom by up to this fraction in or out")
    cutout: int = Field(0, ge=0, description="side in pixels of a square set to zero (the mean) at a random place")
    brightness: float = Field(0.0, ge=0.0, lt=1.0, description="scale each image's pixels by 1 +- up to this")
    contrast: float = Field(0.0, ge=0.0, lt=1.0, description="scale each image's deviations from its mean by 1 +- this")
    saturation: float = Field(0.0, ge=0.0, lt=1.0, description="colour images: blend with their grey by 1 +- this")
    hue: float = Field(0.0, ge=0.0, le=0.5, description="colour images: turn hues by up to this fraction of the circle")


class ImageConfig(Strict):
    """Decoding options for image files (image_folder) and resizing of any image set."""

    size: ImageSize = Field(None, description="(height, width) or one side; null: keep")
    resize: Literal["crop", "stretch", "letterbox"] = Field(
        "crop",
        description="crop: scale the shorter side to fit, then center-crop; stretch: ignore aspect; letterbox: "
        "fit the whole image, pad the rest (box_folder always letterboxes unless told stretch)",
    )
    channels: Literal["auto", "grey", "rgb"] = Field("auto", description="auto: grey when every image is grey")
    memory_mb: float = Field(
        2048.0, gt=0.0, description="a decoded set larger than this streams from disk with DataLoader workers"
    )
    workers: int = Field(2, ge=0, description="DataLoader worker processes that decode image files")


Byte = Annotated[int, Field(ge=0, le=255)]
Colour = tuple[Byte, Byte, Byte]


class MasksConfig(Strict):
    """Segmentation masks beside images (the data set ``mask_folder``): where they are and what
    their pixel values mean. Void pixels become 255, which no loss or metric counts."""

    images: str | None = Field(
        None, description="images folder under data.root, may hold {split} (e.g. '{split}'); null: detect"
    )
    masks: str | None = Field(
        None, description="masks folder under data.root, may hold {split} (e.g. '{split}annot'); null: detect"
    )
    splits: dict[str, str] | None = Field(
        None, description="split -> its folder's name (CamVid: {train: val, test: test}); null: train/val/test"
    )
    format: Literal["auto", "index", "binary", "palette"] = Field(
        "auto",
        description="index: class-index PNGs; binary: two values, thresholded; palette: RGB colours, one per "
        "class; auto: binary for 0/255 or JPEG masks, palette for colour masks, else index",
    )
    threshold: int = Field(128, ge=1, le=255, description="binary: values from this up are foreground (0-255)")
    palette: list[Colour] | None = Field(
        None, description="one [r, g, b] per class in class order: how colour masks map, and predictions are drawn"
    )
    classes: list[str] | None = Field(
        None, description="class names in index order (void is not a class); null: ROOT/classes.txt, else class_N"
    )
    ignore_index: Annotated[int, Field(ge=0)] | Colour | None = Field(
        None, description="the masks' void value (CamVid 11, VOC 255; [r, g, b] for colour masks), read as 255"
    )

    @model_validator(mode="after")
    def _consistent(self) -> MasksConfig:
        if (self.images is None) != (self.masks is None):
            raise ValueError("set data.masks.images and data.masks.masks together (folders under data.root)")
        if self.splits is not None:
            unknown = sorted(set(self.splits) - {"train", "val", "test"})
            if unknown:
                raise ValueError(f"splits: no split {', '.join(unknown)} (the splits are train, val and test)")
            if "train" not in self.splits:
                raise ValueError("splits: map train to a folder (e.g. {train: val, test: test})")
            if len(set(self.splits.values())) < len(self.splits):
                raise ValueError("splits: two splits read the same folder")
        if self.classes is not None and len(set(self.classes)) < len(self.classes):
            raise ValueError("classes: the names must differ")
        if self.palette is not None and len(set(self.palette)) < len(self.palette):
            raise ValueError("palette: two classes have the same colour")
        if self.palette and self.classes and len(self.palette) != len(self.classes):
            raise ValueError(f"palette has {len(self.palette)} colours for {len(self.classes)} classes")
        if self.format == "binary" and self.classes and len(self.classes) != 2:
            raise ValueError(f"format binary has 2 classes, not {len(self.classes)}")
        return self


class BoxesConfig(Strict):
    """Object boxes beside images (the data set ``box_folder``): their format and classes.
    Boxes are checked on load: inverted ones are swapped, those over the edge clipped, empty
    or non-finite ones dropped, each kind counted in one warning that names the files."""

    format: Literal["auto", "voc", "coco", "yolo"] = Field(
        "auto",
        description="voc: JPEGImages/ + Annotations/*.xml; coco: a JSON file or annotations/*.json; "
        "yolo: images/ + labels/*.txt; auto: detect",
    )
    classes: list[str] | None = Field(
        None, description="class names in order; boxes of other classes are dropped (counted); null: from the files"
    )
    max_side: int = Field(512, ge=32, description="without data.image.size: images are brought to at most this side")

    @model_validator(mode="after")
    def _distinct(self) -> BoxesConfig:
        if self.classes is not None and len(set(self.classes)) < len(self.classes):
            raise ValueError("classes: the names must differ")
        return self
