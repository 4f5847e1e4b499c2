"""The data of shift-block training: objects with their candidate sets, and the validation prompts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rpsam2_backend.engine.embedding_cache import image_key
from trainer.feature_cache import FeatureCache
from trainer.prompts import sample_points, stable_hash
from trainer.shift.candidates import CandidateGenerator

log = logging.getLogger(__name__)


@dataclass
class TrainObject:
    """One object ready for training: packed mask, candidate set, where its features live."""

    key: str  # "<sample_id>/<object_id>"
    class_name: str
    image_hash: str
    orig_hw: tuple[int, int]
    packed_mask: np.ndarray
    grid: np.ndarray  # all grid points (px)
    candidates_px: np.ndarray  # G (px)
    best_dice: float
    sample: Any  # the dataset Sample (to re-read the image if its features were evicted)

    def mask(self) -> np.ndarray:
        h, w = self.orig_hw
        return np.unpackbits(self.packed_mask, count=h * w).reshape(h, w).astype(bool)

    def candidates_norm(self) -> torch.Tensor:
        h, w = self.orig_hw
        return torch.from_numpy(self.candidates_px / np.array([w, h])).float()


def prepare_objects(
    samples: Sequence[Any],
    features: FeatureCache,
    candidates: CandidateGenerator,
    progress: bool = False,
    what: str = "train",
) -> list[TrainObject]:
    """Encode every image once (disk cache) and compute every object's candidate set (disk cache)."""
    from tqdm.auto import tqdm

    objects: list[TrainObject] = []
    for sample in tqdm(samples, desc=f"prepare {what}", disable=not progress, unit="img"):
        if not sample.objects:
            continue
        image = sample.load_image()
        image_hash = image_key(image)
        feats = features.get(image, image_hash)
        for obj in sample.objects:
            mask = obj.load()
            if mask.shape != image.shape[:2]:
                raise ValueError(
                    f"{sample.sample_id}: mask of object {obj.object_id!r} is {mask.shape}, image is {image.shape[:2]}"
                )
            if not mask.any():
                log.warning("%s: object %r has an empty mask; skipped", sample.sample_id, obj.object_id)
                continue
            cand = candidates(feats, mask, image_hash, str(obj.object_id))
            objects.append(
                TrainObject(
                    key=f"{sample.sample_id}/{obj.object_id}",
                    class_name=obj.class_name,
                    image_hash=image_hash,
                    orig_hw=feats.orig_hw,
                    packed_mask=np.packbits(mask.reshape(-1)),
                    grid=cand.grid,
                    candidates_px=cand.points,
                    best_dice=cand.best_dice,
                    sample=sample,
                )
            )
    return objects


def data_summary(objects: Sequence[TrainObject]) -> dict[str, Any]:
    classes: dict[str, int] = {}
    for o in objects:
        classes[o.class_name] = classes.get(o.class_name, 0) + 1
    return {
        "images": len({o.image_hash for o in objects}),
        "objects": len(objects),
        "classes": dict(sorted(classes.items())),
        "mean_candidates": float(np.mean([len(o.candidates_px) for o in objects])) if objects else 0.0,
        "mean_grid_points": float(np.mean([len(o.grid) for o in objects])) if objects else 0.0,
        "mean_best_candidate_dice": float(np.mean([o.best_dice for o in objects])) if objects else 0.0,
    }


def validation_points(objects: Sequence[TrainObject], seeds: int) -> list[np.ndarray]:
    """Per object (seeds, 2) pixel-centre clicks, from ``sample_points`` seeded by (seed, object key)."""
    out = []
    for o in objects:
        mask = o.mask()
        pts = [sample_points(mask, np.random.default_rng([s, stable_hash(o.key)]), 1)[0] for s in range(seeds)]
        out.append(np.asarray(pts, dtype=np.float64).reshape(-1, 2) + 0.5)
    return out
