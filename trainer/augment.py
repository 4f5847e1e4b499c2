"""SAM2's training augmentations (``sam2/configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml``,
``train_transforms``), for one image and the masks of its objects:

1. horizontal flip with p = 0.5;
2. random affine: rotation uniform in [-25°, 25°], x-shear uniform in [-20°, 20°] (torchvision's
   ``RandomAffine(degrees=25, shear=20)``: no translation, no scaling); the image is resampled
   bilinearly and filled with SAM2's image mean (123, 116, 103), the masks with nearest neighbour and
   0 -- the same geometric transform for image and masks, so they stay aligned;
   when it would empty a mask the affine step is dropped (SAM2's ``num_tentatives=1``);
3. (SAM2 resizes to a 1024 square here; the engine does that when it encodes);
4. colour jitter: brightness, contrast, saturation factors uniform in [1-0.1, 1+0.1], [1-0.03, 1+0.03],
   [1-0.03, 1+0.03], applied in random order (torchvision's ``ColorJitter``), no hue;
5. grayscale with p = 0.05 (three equal channels);
6. colour jitter again with (0.1, 0.05, 0.05) (SAM2's per-frame jitter; one frame here).

Every random draw comes from the numpy generator the caller passes (seeded per step and object), so
an augmented training run is a function of its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

IMAGE_FILL = (123, 116, 103)  # SAM2's image mean in [0, 255]: what the affine fills in


@dataclass(frozen=True)
class AugmentSpec:
    """The ranges of the augmentations; the defaults are SAM2's."""

    hflip_p: float = 0.5
    degrees: float = 25.0
    shear: float = 20.0
    jitter: tuple[float, float, float] = (0.1, 0.03, 0.03)  # brightness, contrast, saturation
    grayscale_p: float = 0.05
    jitter_frame: tuple[float, float, float] = (0.1, 0.05, 0.05)


@dataclass(frozen=True)
class ColorJitterParams:
    order: tuple[int, ...]  # indices into (brightness, contrast, saturation)
    factors: tuple[float, float, float]


@dataclass(frozen=True)
class AugmentParams:
    """One draw of ``AugmentSpec``: everything ``apply`` needs, no randomness left."""

    flip: bool
    angle: float
    shear: float
    jitter: ColorJitterParams
    grayscale: bool
    jitter_frame: ColorJitterParams


def _jitter_params(rng: np.random.Generator, ranges: Sequence[float]) -> ColorJitterParams:
    order = tuple(int(i) for i in rng.permutation(3))
    factors = tuple(float(rng.uniform(max(0.0, 1.0 - r), 1.0 + r)) if r > 0 else 1.0 for r in ranges)
    return ColorJitterParams(order, factors)  # type: ignore[arg-type]


def draw_params(rng: np.random.Generator, spec: AugmentSpec | None = None) -> AugmentParams:
    spec = spec or AugmentSpec()
    return AugmentParams(
        flip=bool(rng.random() < spec.hflip_p),
        angle=float(rng.uniform(-spec.degrees, spec.degrees)),
        shear=float(rng.uniform(-spec.shear, spec.shear)),
        jitter=_jitter_params(rng, spec.jitter),
        grayscale=bool(rng.random() < spec.grayscale_p),
        jitter_frame=_jitter_params(rng, spec.jitter_frame),
    )


def _color_jitter(image: torch.Tensor, params: ColorJitterParams) -> torch.Tensor:
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for i in params.order:
        if params.factors[i] != 1.0:
            image = ops[i](image, params.factors[i])
    return image


def _affine(image: torch.Tensor, masks: torch.Tensor, params: AugmentParams) -> tuple[torch.Tensor, torch.Tensor]:
    kwargs = {"angle": params.angle, "translate": [0, 0], "scale": 1.0, "shear": [params.shear, 0.0]}
    image = TF.affine(image, interpolation=InterpolationMode.BILINEAR, fill=list(IMAGE_FILL), **kwargs)
    masks = TF.affine(masks, interpolation=InterpolationMode.NEAREST, fill=[0.0], **kwargs)
    return image, masks


def apply(image: np.ndarray, masks: Sequence[np.ndarray], params: AugmentParams) -> tuple[np.ndarray, list[np.ndarray]]:
    """Augment an RGB uint8 (H, W, 3) image and its (H, W) masks with one parameter draw.

    Returns the new image (uint8, same size) and masks (bool); the geometric steps move image and
    masks together, the colour steps touch the image only."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    for m in masks:
        if m.shape != (h, w):
            raise ValueError(f"mask {m.shape} does not match image {(h, w)}")
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W) uint8
    msk = torch.from_numpy(np.stack([np.asarray(m, dtype=np.uint8) for m in masks])) if len(masks) else (
        torch.zeros(0, h, w, dtype=torch.uint8))
    if params.flip:
        img, msk = TF.hflip(img), TF.hflip(msk)
    if params.angle != 0.0 or params.shear != 0.0:
        moved_img, moved_msk = _affine(img, msk, params)
        if len(msk) == 0 or bool(moved_msk.flatten(1).any(dim=1).all()):
            img, msk = moved_img, moved_msk  # else: an object left the frame, keep it unrotated
    img = _color_jitter(img, params.jitter)
    if params.grayscale:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    img = _color_jitter(img, params.jitter_frame)
    out_img = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
    return out_img, [m.numpy().astype(bool) for m in msk]


def augment(
    image: np.ndarray, masks: Sequence[np.ndarray], rng: np.random.Generator, spec: AugmentSpec | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``apply`` with parameters drawn from ``rng``."""
    return apply(image, masks, draw_params(rng, spec))
