"""Helpers of the shift-block tests: a small block, a small grid, VOC objects as samples, a cheap config."""

from __future__ import annotations

import numpy as np

from rpsam2_backend.engine.modeling.shift_block import ShiftBlockConfig
from trainer.datasets.base import ObjectMask, Sample
from trainer.shift.candidates import GridSpec
from trainer.shift.config import TrainConfig

TWO_LAYERS = ShiftBlockConfig(layers=2)
SMALL_GRID = GridSpec(target_points=12)


def voc_sample(voc: dict, ranks: list[int], name: str = "voc") -> Sample:
    masks = voc["masks"].astype(bool)
    order = np.argsort([-m.sum() for m in masks])
    objects = [ObjectMask(f"obj{order[r]}", "thing", masks[order[r]]) for r in ranks]
    return Sample(name, objects, image_loader=lambda: voc["rgb"])


def train_config(tmp_path, **changes) -> TrainConfig:
    base = dict(
        steps=4, batch_size=1, points_per_object=2, lr=5e-4, grid=SMALL_GRID, shift=TWO_LAYERS,
        val_seeds=1, val_every=2, cache_dir=str(tmp_path / "cache") if tmp_path else None, progress=False,
    )
    return TrainConfig(**{**base, **changes})
