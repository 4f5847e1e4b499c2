"""Brush RLE: our vectorised encoder vs the Label Studio SDK's on a Full-HD mask (identical output)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from benchmarks.common import Row, fmt_ratio, fmt_s, measure, median

TARGET = 20.0


def full_hd_mask(height: int = 1080, width: int = 1920) -> np.ndarray:
    """0/255 uint8 mask with a few instrument-like shapes: an ellipse, a thin bar, a ring."""
    yy, xx = np.mgrid[0:height, 0:width]
    ellipse = ((xx - 0.55 * width) / (0.2 * width)) ** 2 + ((yy - 0.5 * height) / (0.3 * height)) ** 2 <= 1
    bar = (np.abs((yy - 0.2 * height) - 0.3 * (xx - 0.1 * width)) < 0.01 * height + 1) & (xx < 0.6 * width)
    r = np.hypot(xx - 0.2 * width, yy - 0.75 * height)
    ring = (r > 0.08 * height) & (r < 0.12 * height)
    return np.where(ellipse | bar | ring, 255, 0).astype(np.uint8)


def run(
    quick: bool = False,
    reps: int | None = None,
    mask: np.ndarray | None = None,
    ours: Callable[[np.ndarray], list[int]] | None = None,
) -> list[Row]:
    from label_studio_sdk.converter.brush import mask2rle

    from rpsam2_backend.labelstudio.brush import mask_to_rle

    ours = ours or mask_to_rle
    mask = full_hd_mask() if mask is None else mask
    reps = reps or (5 if quick else 20)
    expected = mask2rle(mask)
    got = ours(mask)
    if list(got) != list(expected):
        diff = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)
        raise AssertionError(
            f"RLE differs from label_studio_sdk mask2rle: {len(got)} vs {len(expected)} values, "
            f"first difference at index {diff if diff is not None else min(len(got), len(expected))}"
        )
    sdk = median(measure(lambda: mask2rle(mask), reps))
    own = median(measure(lambda: ours(mask), reps))
    ratio = sdk / own
    h, w = mask.shape
    return [
        Row(
            f"RLE {w}x{h} (identical output)",
            f"sdk mask2rle {fmt_s(sdk)}",
            f"ours {fmt_s(own)}",
            fmt_ratio(ratio),
            f">= {TARGET:g}x",
            ratio >= TARGET,
            {"sdk_s": sdk, "ours_s": own, "ratio": ratio, "rle_values": float(len(expected))},
        )
    ]
