"""Batched on-device augmentation: each step against a torch reference, per-sample randomness,
seeding, and which steps a data set gets by default."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from torchkeel.config import AugmentConfig
from torchkeel.data.augment import affine, build_augment, cutout, random_affine, random_crop, random_flip
from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError


def _batch(b: int = 6, c: int = 3, h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(0))


def _spec(flip: bool | None) -> DataSpec:
    extra = {} if flip is None else {"flip": flip}
    return DataSpec("s", "image", "classification", (3, 16, 16), classes=["a", "b"], extra=extra)


def test_crop_is_a_shifted_window_of_the_padded_image():
    x = _batch()
    torch.manual_seed(1)
    out = random_crop(x, 2)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):  # every sample equals one of the 25 windows
        windows = [padded[i, :, dy : dy + 16, dx : dx + 16] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_flip_mirrors_some_samples():
    x = _batch(b=64)
    torch.manual_seed(0)
    out = random_flip(x)
    mirrored = [torch.equal(o, s.flip(2)) for o, s in zip(out, x, strict=True)]
    kept = [torch.equal(o, s) for o, s in zip(out, x, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True)) and 10 < sum(mirrored) < 54


def test_affine_matches_torch_rotation_and_identity():
    x = _batch(b=2, h=8, w=8)
    zeros = torch.zeros(2)
    # no rotation, zoom 1, no shift: exactly the input (bilinear sampling at the pixel centres)
    torch.testing.assert_close(affine(x, zeros, torch.ones(2), torch.zeros(2, 2)), x)
    # a quarter turn of a square image is torch.rot90; the sign follows torchvision's convention
    quarter = affine(x, torch.full((2,), math.pi / 2), torch.ones(2), torch.zeros(2, 2))
    torch.testing.assert_close(quarter, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5, rtol=0)
    from torchvision.transforms.v2 import functional as TF

    torch.testing.assert_close(quarter[0], TF.rotate(x[0], 90.0), atol=1e-5, rtol=0)
    # a shift of half the width moves the picture 4 pixels right; zeros (the mean) come in
    shifted = affine(x, zeros, torch.ones(2), torch.tensor([[0.5, 0.0], [0.5, 0.0]]))
    torch.testing.assert_close(shifted[..., 4:], x[..., :4], atol=1e-5, rtol=0)
    assert shifted[..., :4].abs().max() == 0


def test_random_affine_varies_per_sample_and_stays_small():
    x = _batch(b=8)
    torch.manual_seed(0)
    out = random_affine(x, rotate=10, translate=0.1, scale=0.1)
    changes = (out - x).abs().mean((1, 2, 3))
    assert len(set(changes.tolist())) == 8 and changes.min() > 0
    assert random_affine(x, 0.0, 0.0, 0.0).sub(x).abs().max() < 1e-5


def test_cutout_zeroes_one_square_per_sample():
    x = torch.ones(32, 1, 20, 20)
    torch.manual_seed(0)
    out = cutout(x, 6)
    zeroed = (out == 0).sum((1, 2, 3))
    assert zeroed.max() == 36 and zeroed.min() >= 9  # a square, clipped when it hangs over the border
    positions = {tuple((o[0] == 0).nonzero()[0].tolist()) for o in out}
    assert len(positions) > 16  # per-sample places
    for o in out:  # each zeroed area is one rectangle
        rows, cols = (o[0] == 0).nonzero().unbind(1)
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == len(rows)


def test_seeded_and_per_sample():
    cfg = AugmentConfig(crop=2, flip=True, rotate=15, translate=0.1, scale=0.1, cutout=4)
    augment = build_augment(cfg, _spec(None))
    x = _batch(b=16)
    y = torch.arange(16)
    torch.manual_seed(5)
    a, ya = augment(x, y)
    torch.manual_seed(5)
    b, _ = augment(x, y)
    torch.manual_seed(6)
    c, _ = augment(x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ya is y  # a class per image: the targets stay as they are
    same = _batch(b=1).expand(16, -1, -1, -1)
    out, _ = augment(same, y)
    assert len({o.sum().item() for o in out}) == 16  # identical inputs, different augmentations


@pytest.mark.parametrize(
    ("data_flip", "cfg_flip", "flips"), [(False, None, False), (True, None, True), (False, True, True)]
)
def test_flip_follows_the_data_unless_set(data_flip, cfg_flip, flips):
    augment = build_augment(AugmentConfig(flip=cfg_flip), _spec(data_flip))
    assert (augment is not None) == flips


def test_nothing_to_do_and_not_for_tables():
    assert build_augment(AugmentConfig(), _spec(None)) is None
    table = DataSpec("t", "table", "classification", (4,), classes=["a", "b"])
    assert build_augment(AugmentConfig(crop=2, flip=True), table) is None


def test_brightness_and_contrast_act_on_the_pixels_not_the_normalised_values():
    from torchkeel.data.augment import photometric

    pixels = torch.rand(8, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor([0.2, 0.4, 0.6]), torch.tensor([0.1, 0.2, 0.3])
    x = (pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    torch.manual_seed(3)
    out = photometric(x, mean, std, brightness=0.5, contrast=0.0) * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    factor = out / pixels  # one brightness factor per image, the same for every pixel and channel
    assert torch.allclose(factor, factor[:, :1, :1, :1].expand_as(factor), atol=1e-4)
    assert ((factor[:, 0, 0, 0] - 1).abs() <= 0.5 + 1e-5).all() and factor[:, 0, 0, 0].std() > 0
    out = photometric(x, mean, std, brightness=0.0, contrast=0.5) * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    torch.testing.assert_close(out.mean((1, 2, 3)), pixels.mean((1, 2, 3)), atol=1e-5, rtol=0)  # mean kept
    ratio = out.std((1, 2, 3)) / pixels.std((1, 2, 3))
    assert ((ratio - 1).abs() <= 0.5 + 1e-4).all() and ratio.std() > 0


def test_saturation_and_hue_keep_each_pixels_grey_and_change_colour():
    from torchkeel.data.augment import LUMA, photometric

    pixels = torch.rand(16, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor([0.3, 0.4, 0.5]), torch.tensor([0.2, 0.25, 0.3])
    x = (pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    for strengths in ({"saturation": 0.8}, {"hue": 0.5}):
        torch.manual_seed(4)
        out = photometric(x, mean, std, 0.0, 0.0, **strengths) * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
        torch.testing.assert_close((out * luma).sum(1), (pixels * luma).sum(1), atol=1e-4, rtol=0)  # grey kept
        assert (out - pixels).abs().amax((1, 2, 3)).min() > 1e-3, strengths  # every image changed
    flat = torch.full((2, 3, 4, 4), 0.6)  # a grey image has no colour to turn or scale
    torch.manual_seed(5)
    same = photometric((flat - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), mean, std, 0.0, 0.0, 0.9, 0.5)
    torch.testing.assert_close(same * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1), flat, atol=1e-5, rtol=0)
    grey_images = torch.rand(3, 1, 4, 4)
    assert torch.equal(photometric(grey_images, torch.zeros(1), torch.ones(1), 0.0, 0.0, 0.9, 0.5), grey_images)


def test_masks_move_with_the_pixels():
    """Segmentation: flips, crops and affine maps move each mask with its image; what comes in
    from outside the image is void (255)."""
    spec = DataSpec("m", "image", "segmentation", (1, 16, 16), classes=list("abcd"))
    blocks = torch.randint(0, 4, (32, 4, 4), generator=torch.Generator().manual_seed(1))
    y = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (32, 16, 16): regions of 4x4 pixels
    x = y[:, None].float()  # the image shows its own mask: a moved pixel keeps its class
    torch.manual_seed(0)
    exact = build_augment(AugmentConfig(crop=3, flip=True), spec)
    xs, ys = exact(x, y)
    void = ys == 255
    assert void.any() and (xs[:, 0][void] == 0).all()  # padding: the mean (0), and void
    assert torch.equal(xs[:, 0][~void], ys[~void].float())
    windows = build_augment(AugmentConfig(crop_size=(8, 12), flip=False), spec)
    xs, ys = windows(x, y)
    assert xs.shape == (32, 1, 8, 12) and ys.shape == (32, 8, 12) and torch.equal(xs[:, 0], ys.float())
    whole = [y[i].unfold(0, 8, 1).unfold(1, 12, 1).flatten(0, 1) for i in range(32)]  # every window of each mask
    assert all((whole[i] == ys[i]).all(-1).all(-1).any() for i in range(32))  # each a window of its own mask
    where = (torch.arange(16)[:, None] * 100 + torch.arange(16)).float().expand(32, 1, 16, 16)
    corners = windows(where, y)[0][:, 0, 0, 0]  # row * 100 + column of each window's top-left pixel
    assert (corners // 100).max() <= 8 and (corners % 100).max() <= 4 and len(set(corners.tolist())) > 5
    with pytest.raises(ConfigError, match="larger than the images"):
        build_augment(AugmentConfig(crop_size=20), spec)
    geometric = build_augment(AugmentConfig(flip=False, translate=0.2, scale=0.2), spec)
    xs, ys = geometric(x, y)
    labelled = ys != 255
    assert labelled.float().mean() < 1  # a shifted or zoomed-out image brings void in
    agree = (xs[:, 0].round() == ys.float()) & labelled
    assert agree.sum() / labelled.sum() > 0.8  # bilinear pixels against nearest labels: borders differ
    classify = build_augment(AugmentConfig(flip=True), _spec(None))
    labels = torch.arange(6)
    assert classify(_batch(), labels)[1] is labels
