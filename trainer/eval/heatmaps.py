"""Fig. 1 (v) / Fig. 5 (v): the Dice of a single click at every grid point of an object, drawn over it.

Every grid point (``trainer.shift.candidates.grid_points``, pixel centres inside the ground truth) is
decoded as one positive click by each method -- for RP-SAM2 the click is shifted first, so the
heatmap shows where the *user* may click and what Dice follows.  Each mask pixel takes the value of
its nearest grid point (a Voronoi fill via the distance transform), so sparse grids read as areas.
Panels: the ground truth, then one panel per method, side by side, cropped around the object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from rpsam2_backend.engine.features import ImageFeatures
from trainer.eval.methods import DecoderState, MethodRunner, MethodSpec
from trainer.eval.results import HeatmapResult
from trainer.scores import dice
from trainer.shift.candidates import GridSpec, grid_points

CMAP = "jet"  # the paper's heatmaps run blue (low) to red (high)


def grid_scores(runner: MethodRunner, features: ImageFeatures, points_px: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Dice of each single-point prediction, (K,) -- one heatmap's values."""
    masks, _ = runner.predict(features, points_px[:, None, :])
    return np.array([dice(m, gt) for m in masks], dtype=np.float64)


def safe_file_name(key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")
    return name[-150:] or "object"


def fill_from_grid(mask: np.ndarray, grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Float image: every pixel of ``mask`` gets the value of its nearest grid point; NaN elsewhere."""
    h, w = mask.shape
    seeds = np.ones((h, w), dtype=bool)
    index = np.full((h, w), -1, dtype=np.int64)
    cols = np.clip(np.floor(grid[:, 0]).astype(np.int64), 0, w - 1)
    rows = np.clip(np.floor(grid[:, 1]).astype(np.int64), 0, h - 1)
    seeds[rows, cols] = False
    index[rows, cols] = np.arange(len(grid))
    _, (near_r, near_c) = ndimage.distance_transform_edt(seeds, return_indices=True)
    filled = np.asarray(values, dtype=np.float64)[index[near_r, near_c]]
    return np.where(mask, filled, np.nan)


def crop_box(mask: np.ndarray, margin: float = 0.25, min_margin: int = 16) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    pad_r = max(min_margin, int(margin * (r1 - r0)))
    pad_c = max(min_margin, int(margin * (c1 - c0)))
    h, w = mask.shape
    return slice(max(0, r0 - pad_r), min(h, r1 + pad_r)), slice(max(0, c0 - pad_c), min(w, c1 + pad_c))


def render(
    path: Path,
    image: np.ndarray,
    mask: np.ndarray,
    title: str,
    panels: Sequence[tuple[str, np.ndarray]],
) -> Path:
    """Write the side-by-side PNG; ``panels`` are (label, filled heatmap) pairs."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, safe in threads and tests

    rs, cs = crop_box(mask)
    crop, gt = image[rs, cs], mask[rs, cs]
    aspect = crop.shape[0] / max(1, crop.shape[1])
    n = 1 + len(panels)
    fig = Figure(figsize=(3.2 * n + 0.6, max(2.5, 3.2 * aspect) + 0.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    overlay = np.zeros((*gt.shape, 4), dtype=np.float32)
    overlay[gt] = (0.1, 0.3, 1.0, 0.45)
    axes[0].imshow(crop)
    axes[0].imshow(overlay)
    axes[0].set_title("(i) ground truth", fontsize=9)
    artist = None
    for ax, (label, heat) in zip(axes[1:], panels, strict=True):
        ax.imshow(crop)
        artist = ax.imshow(np.ma.masked_invalid(heat[rs, cs]), cmap=CMAP, vmin=0.0, vmax=1.0, alpha=0.8)
        ax.contour(gt.astype(float), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(label, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if artist is not None:
        fig.colorbar(artist, ax=list(axes[1:]), shrink=0.8, label="Dice")
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def object_heatmap(
    key: str,
    class_name: str,
    image: np.ndarray,
    mask: np.ndarray,
    features: Mapping[str, ImageFeatures],
    order: Sequence[str],
    methods: Mapping[str, MethodSpec],
    runners: Mapping[str, MethodRunner],
    decoders: DecoderState,
    grid_spec: GridSpec,
    out_dir: Path,
) -> HeatmapResult:
    """Score every grid point of one object with every method and draw the panels; the PNG's path and values.

    ``features``: per method, the image's features from that method's model (baselines have their own)."""
    grid = grid_points(mask, grid_spec)
    scores: dict[str, np.ndarray] = {}
    for name in order:
        decoders.activate(methods[name].decoder_dir)
        scores[name] = grid_scores(runners[name], features[name], grid, mask)
    panels = [
        (f"{methods[name].label}: Dice {100 * scores[name].mean():.1f}±{100 * scores[name].std():.1f}",
         fill_from_grid(mask, grid, scores[name]))
        for name in methods  # the caller's order, e.g. SAM2 left of RP-SAM2
    ]
    path = render(out_dir / f"{safe_file_name(key)}.png", image, mask,
                  f"{class_name} ({key}), {len(grid)} grid points", panels)
    return HeatmapResult(key, class_name, str(path), grid, scores)
