"""Where the prompts go: random positive clicks inside an object's ground truth, reproducible by seed.

One module for every place that draws clicks, so that evaluation, shift-block validation and the
two trainers agree on the conventions: points are ``(x, y) = (col, row)`` in pixels, and every draw
comes from a generator seeded with plain integers (``stable_hash`` turns an object id into one), never
from global random state.

- ``sample_points`` / ``points_for_protocol``: distinct pixels, the evaluation protocol (§3.3) and the
  validation prompts of shift-block training; the caller adds 0.5 for pixel centres.
- ``click_points``: continuous clicks uniform over the object's area, the training clicks of the shift
  block (§3.2, ``train_clicks="area"``) and of SAM2-FT.
- ``grid_clicks``: distinct points of the object's grid (``trainer.shift.candidates.grid_points``), the
  shift block's training clicks with ``train_clicks="grid"`` ("we do a grid sampling of points in each
  object and refine 10 random points during training", §3.2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence

import numpy as np


def stable_hash(object_id: Hashable) -> int:
    """Process-independent 63-bit hash of an object id (Python's hash() is salted per process).

    ``repr`` keeps ``1`` and ``"1"`` apart; ids should be plain values (str, int, tuples of those).
    """
    digest = hashlib.blake2b(repr(object_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def sample_points(gt_mask: np.ndarray, rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """``n`` distinct pixel centers drawn uniformly from the mask, as float (x, y) = (col, row), shape (n, 2).

    Raises ValueError for an empty mask or when the mask has fewer than ``n`` pixels.
    """
    rows, cols = np.nonzero(np.asarray(gt_mask))
    if rows.size == 0:
        raise ValueError("cannot sample a prompt point from an empty mask")
    if n < 1 or n > rows.size:
        raise ValueError(f"cannot sample {n} distinct points from a mask of {rows.size} pixels")
    idx = rng.choice(rows.size, size=n, replace=False)
    return np.stack([cols[idx], rows[idx]], axis=1).astype(np.float64)


def points_for_protocol(
    objects: Iterable[tuple[Hashable, np.ndarray]],
    seeds: Sequence[int],
    n_points: int = 1,
) -> dict[int, dict[Hashable, np.ndarray]]:
    """Prompt points per seed and object: ``result[seed][object_id] -> (n_points, 2)`` float (x, y).

    Each object's generator is seeded with ``[seed, stable_hash(object_id)]``, so an object's points depend
    only on the seed and its id: not on the method, the object order, or which other objects are present.
    """
    objects = list(objects)
    ids = [object_id for object_id, _ in objects]
    if len(set(ids)) != len(ids):
        raise ValueError("object ids must be unique")
    result: dict[int, dict[Hashable, np.ndarray]] = {}
    for seed in seeds:
        result[seed] = {
            object_id: sample_points(mask, np.random.default_rng([seed, stable_hash(object_id)]), n_points)
            for object_id, mask in objects
        }
    return result


def click_points(mask: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` clicks uniform over the object's area: random mask pixel + uniform offset in it, (n, 2)."""
    rows, cols = np.nonzero(mask)
    idx = rng.choice(rows.size, size=n, replace=rows.size < n)
    return np.stack([cols[idx], rows[idx]], axis=1) + rng.random((n, 2))


def grid_clicks(grid: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` of an object's grid points (K, 2), drawn uniformly without replacement, as (n, 2) float64.

    A grid with fewer than ``n`` points gives every point once (in random order) and draws the rest
    again from the grid: the step still refines ``n`` clicks.  Raises ValueError for an empty grid."""
    grid = np.asarray(grid, dtype=np.float64).reshape(-1, 2)
    if len(grid) == 0:
        raise ValueError("cannot draw clicks from an empty grid")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    idx = rng.permutation(len(grid))[:n]
    if n > len(grid):
        idx = np.concatenate([idx, rng.choice(len(grid), size=n - len(grid), replace=True)])
    return grid[idx].copy()
