"""Candidate points (paper §2.2): where on an object a single click makes SAM2 segment it best.

For each object: sample a grid of points inside its ground-truth mask, decode every grid point as
a single positive click (all of them in one batched decoder call, chunked only to bound memory),
score each mask against the ground truth with Dice, and keep the candidate set

    G = { g_i : d_i >= max_j d_j - eps }        (eps = 0.005, the paper's 0.5 %)

Grid (``GridSpec``, default ``target_points=64``): a square lattice with stride
``max(min_stride, sqrt(area / target_points))`` pixels laid over the object's bounding box
(centred in it), keeping the lattice points whose pixel is inside the mask.  A lattice of stride s
puts about area/s^2 points in any shape, so every object -- a thin cannula or the whole lens --
gets ~64 points; an object too thin for the lattice to hit at least ``min_points`` pixels gets the
stride halved until it does (down to one point per pixel).  Points are pixel centres
``(col + 0.5, row + 0.5)`` in the continuous pixel frame of the engine.

Each point's mask is the one SAM2 itself returns for a single click (``multimask=True``: the best
of three by predicted IoU, exactly ``SAM2Engine.decode_masks``/``RPSAM2Predictor.segment``), so
a candidate is a point where the deployed predictor scores best.

SAM2 is frozen, so a candidate set depends only on (image content, object mask, SAM2 weights, grid
parameters): it is cached on disk under ``ROOT/candidates/<decoder identity[:16]>/``.  The cache
holds every grid point with its Dice; ``eps`` is applied when reading, so changing it needs no
decoding.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rpsam2_backend.engine.features import ImageFeatures
from rpsam2_backend.engine.sam2_engine import SAM2Engine
from trainer.feature_cache import decoder_identity, mask_hash
from trainer.io.atomic import atomic_path

log = logging.getLogger(__name__)

DEFAULT_EPS = 0.005


@dataclass(frozen=True)
class GridSpec:
    """Grid sampling inside an object; see the module docstring for the rule."""

    target_points: int = 64
    min_stride: float = 2.0
    min_points: int = 8
    stride: float | None = None  # a fixed stride in pixels overrides the target

    def __post_init__(self) -> None:
        if self.target_points < 1 or self.min_points < 1:
            raise ValueError("target_points and min_points must be >= 1")
        if self.stride is not None and self.stride < 1.0:
            raise ValueError(f"stride must be >= 1 pixel, got {self.stride}")
        if self.min_stride < 1.0:
            raise ValueError(f"min_stride must be >= 1 pixel, got {self.min_stride}")

    def stride_for(self, area: int) -> float:
        if self.stride is not None:
            return float(self.stride)
        return max(self.min_stride, math.sqrt(area / self.target_points))

    def key(self) -> str:
        return "|".join(f"{k}={v}" for k, v in sorted(asdict(self).items()))

    @classmethod
    def from_dict(cls, data: dict) -> GridSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _lattice(mask: np.ndarray, stride: float) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1

    def axis(lo: int, hi: int) -> np.ndarray:
        n = max(1, int(math.floor((hi - lo) / stride)))
        offset = (hi - lo - (n - 1) * stride) / 2.0  # centre the lattice in the box
        return np.floor(lo + offset + stride * np.arange(n)).astype(np.int64).clip(lo, hi - 1)

    grid_r, grid_c = np.meshgrid(np.unique(axis(r0, r1)), np.unique(axis(c0, c1)), indexing="ij")
    grid_r, grid_c = grid_r.ravel(), grid_c.ravel()
    inside = mask[grid_r, grid_c]
    return np.stack([grid_c[inside] + 0.5, grid_r[inside] + 0.5], axis=1)


def grid_points(mask: np.ndarray, spec: GridSpec | None = None) -> np.ndarray:
    """(K, 2) float64 pixel-centre points (x, y) inside ``mask``; K >= 1 for a non-empty mask."""
    spec = spec or GridSpec()
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    area = int(mask.sum())
    if area == 0:
        raise ValueError("cannot place grid points in an empty mask")
    stride = spec.stride_for(area)
    points = _lattice(mask, stride)
    while len(points) < min(spec.min_points, area) and stride > 1.0:
        stride = max(1.0, stride / 2.0)
        points = _lattice(mask, stride)
    return points


@torch.no_grad()
def grid_dice(
    engine: SAM2Engine,
    features: ImageFeatures,
    points_px: np.ndarray,
    gt_mask: np.ndarray,
    chunk_size: int = 64,
    multimask: bool = True,
) -> np.ndarray:
    """Dice vs ``gt_mask`` of each point's single-click SAM2 mask, (K,) float64.

    One ``decode_masks`` call decodes ``chunk_size`` points at once (all of them when K <= chunk).
    """
    gt = np.asarray(gt_mask, dtype=bool)
    if gt.shape != tuple(features.orig_hw):
        raise ValueError(f"mask shape {gt.shape} differs from the image size {features.orig_hw}")
    points_px = np.asarray(points_px, dtype=np.float32).reshape(-1, 2)
    gt_flat = gt.reshape(-1)
    gt_area = int(gt_flat.sum())
    out = np.empty(len(points_px), dtype=np.float64)
    for start in range(0, len(points_px), max(1, chunk_size)):
        chunk = torch.from_numpy(points_px[start : start + chunk_size]).to(engine.device)
        labels = torch.ones(chunk.shape[0], 1, dtype=torch.int)
        masks, _ = engine.decode_masks(features, chunk[:, None, :], labels, multimask=multimask)
        flat = masks.reshape(masks.shape[0], -1)
        inter = (flat & gt_flat).sum(axis=1)
        total = flat.sum(axis=1) + gt_area
        # Same rule as trainer.scores.dice: both empty -> 1 (cannot happen: gt is an object).
        out[start : start + len(chunk)] = np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)
    return out


@dataclass
class CandidateSet:
    """All grid points of one object with their Dice; ``points``/``mask`` select G for ``eps``."""

    grid: np.ndarray  # (K, 2) float pixel coordinates (x, y)
    dice: np.ndarray  # (K,) Dice of each grid point's SAM2 mask
    eps: float = DEFAULT_EPS

    @property
    def best_dice(self) -> float:
        return float(self.dice.max())

    @property
    def selected(self) -> np.ndarray:
        return self.dice >= self.dice.max() - self.eps

    @property
    def points(self) -> np.ndarray:
        """The candidate set G, (M, 2) pixel coordinates, M >= 1."""
        return self.grid[self.selected]

    def normalised(self, orig_hw: tuple[int, int]) -> np.ndarray:
        h, w = orig_hw
        return self.points / np.array([w, h], dtype=np.float64)

    def with_eps(self, eps: float) -> CandidateSet:
        return CandidateSet(self.grid, self.dice, eps)


def nearest_candidate_distance(points: torch.Tensor, candidates: Sequence[torch.Tensor]) -> torch.Tensor:
    """Euclidean distance of each point (B, 2) to the nearest point of its own set (K_b, 2), (B,)."""
    return torch.stack(
        [torch.cdist(p[None].float(), c.to(p.device).float()).min() for p, c in zip(points, candidates, strict=True)]
    )


class CandidateCache:
    """Grid points + Dice per object on disk (``.npz``), keyed as the module docstring says."""

    def __init__(self, root: str | Path, identity: str) -> None:
        self.dir = Path(root) / "candidates" / identity[:16]

    @staticmethod
    def key(image_hash: str, object_id: str, gt_mask: np.ndarray, grid: GridSpec, multimask: bool) -> str:
        text = f"{image_hash}|{object_id}|{mask_hash(gt_mask)}|{grid.key()}|multimask={multimask}"
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npz"

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return data["grid"], data["dice"]
        except Exception as exc:  # truncated/foreign file: recompute
            log.warning("ignoring unreadable candidate cache entry %s: %s", path, exc)
            return None

    def put(self, key: str, grid: np.ndarray, dice: np.ndarray) -> None:
        with atomic_path(self.path(key)) as tmp, open(tmp, "wb") as f:
            np.savez(f, grid=grid, dice=dice)


class CandidateGenerator:
    """Candidate sets for objects of encoded images, cached on disk when ``cache_dir`` is set."""

    def __init__(
        self,
        engine: SAM2Engine,
        grid: GridSpec | None = None,
        eps: float = DEFAULT_EPS,
        cache_dir: str | Path | None = None,
        chunk_size: int = 64,
        multimask: bool = True,
    ) -> None:
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.engine = engine
        self.grid = grid or GridSpec()
        self.eps = eps
        self.chunk_size = chunk_size
        self.multimask = multimask
        self.cache = CandidateCache(cache_dir, decoder_identity(engine)) if cache_dir is not None else None
        self.computed = 0
        self.cache_hits = 0

    def __call__(
        self,
        features: ImageFeatures,
        gt_mask: np.ndarray,
        image_hash: str | None = None,
        object_id: str = "",
    ) -> CandidateSet:
        gt_mask = np.asarray(gt_mask, dtype=bool)
        key = None
        if self.cache is not None and image_hash is not None:
            key = CandidateCache.key(image_hash, object_id, gt_mask, self.grid, self.multimask)
            found = self.cache.get(key)
            if found is not None:
                self.cache_hits += 1
                return CandidateSet(found[0], found[1], self.eps)
        grid = grid_points(gt_mask, self.grid)
        dice = grid_dice(self.engine, features, grid, gt_mask, self.chunk_size, self.multimask)
        self.computed += 1
        if key is not None:
            self.cache.put(key, grid, dice)
        return CandidateSet(grid, dice, self.eps)
