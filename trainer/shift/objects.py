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
    features: FeatureCache | None,
    candidates: CandidateGenerator | None,
    progress: bool = False,
    what: str = "train",
) -> list[TrainObject]:
    """Encode every image once (disk cache) and compute every object's candidate set (disk cache).

    ``features=None, candidates=None``: masks only (no encoder, no candidates) -- the objects of the
    augmented training path, whose images are augmented, encoded and given candidates every step."""
    from tqdm.auto import tqdm

    if (features is None) != (candidates is None):
        raise ValueError("pass both features and candidates, or neither")
    objects: list[TrainObject] = []
    empty = np.zeros((0, 2), dtype=np.float64)
    for sample in tqdm(samples, desc=f"prepare {what}", disable=not progress, unit="img"):
        if not sample.objects:
            continue
        image = sample.load_image()
        image_hash = image_key(image)
        feats = features.get(image, image_hash) if features is not None else None
        orig_hw = feats.orig_hw if feats is not None else (int(image.shape[0]), int(image.shape[1]))
        for obj in sample.objects:
            mask = obj.load()
            if mask.shape != image.shape[:2]:
                raise ValueError(
                    f"{sample.sample_id}: mask of object {obj.object_id!r} is {mask.shape}, image is {image.shape[:2]}"
                )
            if not mask.any():
                log.warning("%s: object %r has an empty mask; skipped", sample.sample_id, obj.object_id)
                continue
            cand = candidates(feats, mask, image_hash, str(obj.object_id)) if candidates is not None else None
            objects.append(
                TrainObject(
                    key=f"{sample.sample_id}/{obj.object_id}",
                    class_name=obj.class_name,
                    image_hash=image_hash,
                    orig_hw=orig_hw,
                    packed_mask=np.packbits(mask.reshape(-1)),
                    grid=cand.grid if cand is not None else empty,
                    candidates_px=cand.points if cand is not None else empty,
                    best_dice=cand.best_dice if cand is not None else float("nan"),
                    sample=sample,
                )
            )
    return objects


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def data_summary(objects: Sequence[TrainObject]) -> dict[str, Any]:
    with_candidates = [o for o in objects if len(o.grid)]
    classes: dict[str, int] = {}
    for o in objects:
        classes[o.class_name] = classes.get(o.class_name, 0) + 1
    return {
        "images": len({o.image_hash for o in objects}),
        "objects": len(objects),
        "classes": dict(sorted(classes.items())),
        # objects of the augmented path get their candidates per step: not counted here
        "mean_candidates": _mean([len(o.candidates_px) for o in with_candidates]),
        "mean_grid_points": _mean([len(o.grid) for o in with_candidates]),
        "mean_best_candidate_dice": _mean([o.best_dice for o in with_candidates]),
    }


def validation_points(objects: Sequence[TrainObject], seeds: int) -> list[np.ndarray]:
    """Per object (seeds, 2) pixel-centre clicks, from ``sample_points`` seeded by (seed, object key)."""
    out = []
    for o in objects:
        mask = o.mask()
        pts = [sample_points(mask, np.random.default_rng([s, stable_hash(o.key)]), 1)[0] for s in range(seeds)]
        out.append(np.asarray(pts, dtype=np.float64).reshape(-1, 2) + 0.5)
    return out
