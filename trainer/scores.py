"""Segmentation scores (paper §3.3): Dice and HD95 on binary 2-D masks, for evaluation and validation.

HD95 convention (same as MedPy's ``medpy.metric.binary.hd95``):

* surface of a mask = mask XOR (mask eroded once with the 4-connected cross structure); pixels on the
  image border count as surface (erosion treats outside-the-image as background, ``border_value=0``);
* directed distances: for every pred-surface pixel the Euclidean distance (in ``spacing`` units) to the
  nearest gt-surface pixel, and for every gt-surface pixel the distance to the nearest pred-surface pixel;
* HD95 = 95th percentile (numpy's default linear interpolation) of the *pooled* set of both directed
  distance arrays. MONAI instead takes the max of the two directed 95th percentiles; the two agree for
  symmetric errors and differ slightly otherwise -- we use the pooled MedPy definition throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

# 4-connectivity: a pixel is interior only when all four edge-neighbours are in the mask, so the surface is
# 8-connected and one pixel thick (MedPy's default connectivity=1).
_SURFACE_STRUCTURE = ndimage.generate_binary_structure(2, 1)

EMPTY_HD95_POLICY = (
    "HD95 with empty masks: both prediction and ground truth empty -> 0.0; exactly one empty -> penalty "
    "= the image diagonal hypot(H*sy, W*sx) (an upper bound of any achievable distance), so means stay "
    "finite and a missing/spurious mask counts as the worst possible miss. Dice with both empty -> 1.0, "
    "exactly one empty -> 0.0."
)

Spacing = float | Sequence[float]


def _as_binary_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).astype(bool, copy=False)
    gt = np.asarray(gt).astype(bool, copy=False)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    if pred.ndim != 2:
        raise ValueError(f"expected 2-D masks, got shape {pred.shape}")
    return pred, gt


def _spacing_pair(spacing: Spacing) -> tuple[float, float]:
    if np.ndim(spacing) == 0:
        sy = sx = float(spacing)  # type: ignore[arg-type]
    else:
        sy, sx = (float(s) for s in spacing)  # type: ignore[union-attr]
    if not (sy > 0 and sx > 0):
        raise ValueError(f"spacing must be positive, got {spacing!r}")
    return sy, sx


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice similarity coefficient 2|P∩G| / (|P|+|G|) of two binary masks (non-zero = foreground).

    Both masks empty -> 1.0: the prediction agrees perfectly with "nothing there". Exactly one empty -> 0.0
    (this is the "point shifted outside the object" failure the paper mentions).
    """
    pred, gt = _as_binary_pair(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, gt).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean surface (one-pixel boundary) of a 2-D mask: mask XOR its 4-connected erosion."""
    mask = np.asarray(mask).astype(bool, copy=False)
    eroded = ndimage.binary_erosion(mask, structure=_SURFACE_STRUCTURE, iterations=1, border_value=0)
    return mask ^ eroded


def image_diagonal(shape: tuple[int, ...], spacing: Spacing = 1.0) -> float:
    """Diagonal of the image extent, hypot(H*sy, W*sx): larger than any distance between two pixels."""
    sy, sx = _spacing_pair(spacing)
    return math.hypot(shape[0] * sy, shape[1] * sx)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Spacing = 1.0) -> np.ndarray:
    """Pooled directed surface distances (pred->gt followed by gt->pred); both masks must be non-empty."""
    pred, gt = _as_binary_pair(pred, gt)
    if not pred.any() or not gt.any():
        raise ValueError("surface distances are undefined for an empty mask")
    sampling = _spacing_pair(spacing)
    pred_surf, gt_surf = surface(pred), surface(gt)
    # EDT measures the distance to the nearest zero, so the surface pixels are the zeros.
    dist_to_gt = ndimage.distance_transform_edt(~gt_surf, sampling=sampling)
    dist_to_pred = ndimage.distance_transform_edt(~pred_surf, sampling=sampling)
    return np.concatenate([dist_to_gt[pred_surf], dist_to_pred[gt_surf]])


def hd95(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Spacing = 1.0,
    empty_value: float | None = None,
) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the surfaces of two binary masks.

    Distances are in pixels times ``spacing`` (a scalar or ``(row, col)`` pair). The definition is the
    pooled MedPy one described in the module docstring.

    Empty masks (see ``EMPTY_HD95_POLICY``): both empty -> 0.0. Exactly one empty -> ``empty_value``, or,
    when ``empty_value`` is None, the image diagonal ``hypot(H*sy, W*sx)`` -- a finite worst-case penalty,
    so a failed prediction neither disappears from the mean (as NaN would) nor makes it infinite.
    """
    pred, gt = _as_binary_pair(pred, gt)
    pred_any, gt_any = bool(pred.any()), bool(gt.any())
    if not pred_any and not gt_any:
        return 0.0
    if pred_any != gt_any:
        return float(image_diagonal(pred.shape, spacing) if empty_value is None else empty_value)
    return float(np.percentile(surface_distances(pred, gt, spacing), 95))
