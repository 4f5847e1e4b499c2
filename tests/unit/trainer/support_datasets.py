"""Helpers of the dataset-loader tests: small random images and pixel boxes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from trainer.datasets import Sample

H, W = 30, 40


def write_rgb(path: Path, seed: int, height: int = H, width: int = W) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def masks_by_id(sample: Sample) -> dict[str, np.ndarray]:
    return {obj.object_id: obj.load() for obj in sample.objects}


def box(y0: int, y1: int, x0: int, x1: int, height: int = H, width: int = W) -> np.ndarray:
    """Inclusive pixel box, the set cv2.fillPoly covers for an axis-aligned integer rectangle."""
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask
