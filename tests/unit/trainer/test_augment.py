"""SAM2's training augmentations: image and masks move together, colour touches the image only."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.augment import AugmentParams, AugmentSpec, ColorJitterParams, apply, augment, draw_params

NO_JITTER = ColorJitterParams((0, 1, 2), (1.0, 1.0, 1.0))


def _pair(h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A bright asymmetric L-shaped object on a dark textured background; the mask is the object."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=bool)
    mask[8:36, 10:18] = True
    mask[28:36, 18:40] = True
    image[mask] = (250, 245, 240)
    return image, mask


def _interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose whole 3x3 neighbourhood has the same mask value (bilinear blurs only the boundary)."""
    from scipy import ndimage

    return ndimage.binary_erosion(mask, np.ones((3, 3))) | ndimage.binary_erosion(~mask, np.ones((3, 3)))


def test_flip_alone_is_exact():
    image, mask = _pair()
    params = AugmentParams(flip=True, angle=0.0, shear=0.0, jitter=NO_JITTER, grayscale=False,
                           jitter_frame=NO_JITTER)
    out, (out_mask,) = apply(image, [mask], params)
    np.testing.assert_array_equal(out, image[:, ::-1])
    np.testing.assert_array_equal(out_mask, mask[:, ::-1])


@pytest.mark.parametrize("seed", range(12))
def test_augmented_image_and_mask_stay_aligned(seed):
    image, mask = _pair()
    out, (out_mask,) = augment(image, [mask], np.random.default_rng(seed))
    assert out.dtype == np.uint8 and out.shape == image.shape and out_mask.shape == mask.shape
    assert out_mask.any()
    # the object stays far brighter than the background and than the fill (SAM2 mean, ≤ 138 after jitter)
    bright = out.astype(int).mean(axis=2) > 165
    inner = _interior(out_mask)
    agree = (bright == out_mask)[inner].mean()
    assert agree > 0.995, (seed, agree)


def test_the_draws_cover_rotation_shear_flip_and_colour():
    draws = [draw_params(np.random.default_rng(s)) for s in range(400)]
    angles = np.array([d.angle for d in draws])
    shears = np.array([d.shear for d in draws])
    assert angles.min() >= -25 and angles.max() <= 25 and angles.max() - angles.min() > 45
    assert shears.min() >= -20 and shears.max() <= 20 and shears.max() - shears.min() > 35
    assert 0.4 < np.mean([d.flip for d in draws]) < 0.6
    assert 0.01 < np.mean([d.grayscale for d in draws]) < 0.1
    brightness = np.array([d.jitter.factors[0] for d in draws])
    contrast = np.array([d.jitter_frame.factors[1] for d in draws])
    assert brightness.min() >= 0.9 and brightness.max() <= 1.1 and contrast.min() >= 0.95 and contrast.max() <= 1.05
    # an affine draw really moves the mask; the same draw is repeatable
    image, mask = _pair()
    rotated = AugmentParams(False, 20.0, 10.0, NO_JITTER, False, NO_JITTER)
    _, (moved,) = apply(image, [mask], rotated)
    assert (moved != mask).mean() > 0.02
    a = augment(image, [mask], np.random.default_rng(5))
    b = augment(image, [mask], np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][0], b[1][0])


def test_an_affine_that_would_lose_an_object_is_dropped():
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    corner = np.zeros((40, 40), dtype=bool)
    corner[0, 0] = True  # a one-pixel object in the corner leaves the frame under rotation
    params = AugmentParams(False, 25.0, 0.0, NO_JITTER, False, NO_JITTER)
    _, (out,) = apply(image, [corner], params)
    np.testing.assert_array_equal(out, corner)


def test_colour_steps_leave_the_mask_alone_and_grayscale_equalises_channels():
    image, mask = _pair()
    params = AugmentParams(False, 0.0, 0.0, ColorJitterParams((2, 0, 1), (1.1, 0.97, 1.03)), True,
                           ColorJitterParams((0, 1, 2), (0.9, 1.05, 0.95)))
    out, (out_mask,) = apply(image, [mask], params)
    np.testing.assert_array_equal(out_mask, mask)
    assert (out != image).any()
    # grayscale before the second jitter, whose saturation change keeps a gray image gray
    assert np.abs(out[..., 0].astype(int) - out[..., 1]).max() <= 1
    with pytest.raises(ValueError, match="does not match"):
        apply(image, [mask[:10]], params)
    assert AugmentSpec().degrees == 25.0 and AugmentSpec().shear == 20.0
