"""Pseudo-masks: RP-SAM2 on the clicks of click-only tasks, uploaded as Label Studio predictions.

A click-only task (see ``trainer.accepted_labels``) has keypoints but no accepted mask.  Each
positive keypoint becomes one object: its label names the brush label, the click is segmented by
the given predictor (the shift block that is about to go live), and the mask is uploaded as a
*prediction* tagged with ``model_version`` -- never an annotation, so no human label is touched.
Tasks that already carry a prediction of that version are skipped (a re-run adds nothing), and
uploads go in batches of ``batch`` predictions per request.

The masks are also returned as samples, the SAM2-FT step's extra training data.

``pseudo_label_samples`` is the offline counterpart for a dataset with ground truth (the paper's
Fig. 4(a) experiment): one random click per object, segmented by several predictors (SAM2, RP-SAM2)
from the same features, the masks kept as new samples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rpsam2_backend.engine.predictor import PixelClick, RPSAM2Predictor
from rpsam2_backend.labelstudio.brush import mask_to_rle
from rpsam2_backend.labelstudio.images import ImageLoader
from trainer.accepted_labels import LabelStudioClient, ProjectLabels, TaskLabel
from trainer.datasets.base import ObjectMask, Sample
from trainer.feature_cache import FeatureCache
from trainer.prompts import sample_points, stable_hash
from trainer.scores import dice

log = logging.getLogger(__name__)


@dataclass
class PseudoLabelResult:
    uploaded_tasks: list[int] = field(default_factory=list)
    skipped_tasks: list[int] = field(default_factory=list)  # already had a prediction of this version
    samples: list[Sample] = field(default_factory=list)  # the pseudo-masks, for SAM2-FT
    objects: int = 0

    def to_dict(self) -> dict:
        return {"uploaded_tasks": self.uploaded_tasks, "skipped_tasks": self.skipped_tasks, "objects": self.objects}


def task_clicks(task: TaskLabel, width: int, height: int) -> list[tuple[str, str, PixelClick]]:
    """(label, to_name, click in pixels) for every positive keypoint of the task's annotation."""
    out = []
    for item in task.annotation.get("result") or []:
        if not isinstance(item, dict) or item.get("type") != "keypointlabels":
            continue
        value = item.get("value") or {}
        labels = value.get("keypointlabels") or []
        if not labels or item.get("is_positive") is False:
            continue
        try:
            x = min(max(float(value["x"]) / 100.0 * width, 0.0), float(width))
            y = min(max(float(value["y"]) / 100.0 * height, 0.0), float(height))
        except (KeyError, TypeError, ValueError):
            log.warning("task %s: keypoint without x/y skipped", task.task_id)
            continue
        out.append((str(labels[0]), str(item.get("to_name") or ""), PixelClick(x, y, True)))
    return out


def generate_pseudo_labels(
    labels: ProjectLabels,
    predictor: RPSAM2Predictor,
    features: FeatureCache,
    loader: ImageLoader,
    client: LabelStudioClient,
    model_version: str,
    batch: int = 50,
    progress: Callable[[int, int], None] | None = None,
) -> PseudoLabelResult:
    result = PseudoLabelResult()
    pending: list[dict] = []
    total = len(labels.click_only)
    for done, task in enumerate(labels.click_only, 1):
        if model_version in labels.predictions.get(task.task_id, set()):
            result.skipped_tasks.append(task.task_id)
            continue
        image = loader.load(task.image_url).rgb
        feats = features.get(image)
        height, width = feats.orig_hw
        regions, objects = [], []
        for index, (label, to_name, click) in enumerate(task_clicks(task, width, height)):
            try:
                from_name, brush_to = labels.label_config.brush_for_label(label, to_name or None)
            except Exception as exc:  # a keypoint label without a brush label: nothing to suggest
                log.warning("task %s: no brush control for label %r (%s)", task.task_id, label, exc)
                continue
            seg = predictor.segment(None, [click], features=feats)
            if not seg.mask.any():
                continue
            regions.append({
                "id": f"pseudo-{task.task_id}-{index}", "from_name": from_name, "to_name": brush_to,
                "type": "brushlabels", "original_width": width, "original_height": height, "image_rotation": 0,
                "value": {"format": "rle", "rle": mask_to_rle(seg.mask), "brushlabels": [label]},
                "score": seg.score,
            })
            objects.append(ObjectMask(f"pseudo-{index}", label, seg.mask))
        if progress:
            progress(done, total)
        if not regions:
            continue
        pending.append({
            "task": task.task_id, "result": regions, "model_version": model_version,
            "score": float(np.mean([r["score"] for r in regions])),
        })
        result.samples.append(Sample(
            task.image_url, objects, sample_id=f"pseudo-task-{task.task_id}",
            image_loader=lambda url=task.image_url: loader.load(url).rgb, meta={"task_id": task.task_id},
        ))
        result.objects += len(objects)
        if len(pending) >= batch:
            _flush(client, labels.project, pending, result)
    _flush(client, labels.project, pending, result)
    log.info("pseudo-masks: %d tasks uploaded (%d objects), %d already had %s", len(result.uploaded_tasks),
             result.objects, len(result.skipped_tasks), model_version)
    return result


def _flush(client: LabelStudioClient, project: str, pending: list[dict], result: PseudoLabelResult) -> None:
    if not pending:
        return
    client.import_predictions(project, pending)
    result.uploaded_tasks += [p["task"] for p in pending]
    pending.clear()


def _packed_loader(packed: np.ndarray, shape: tuple[int, int]) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)

    return load


@dataclass
class OfflinePseudoLabels:
    """Per predictor: the pseudo-labelled samples and the Dice of each pseudo-mask with the ground truth."""

    samples: dict[str, list[Sample]]
    dice: dict[str, list[float]]
    clicks: int = 0
    empty: dict[str, int] = field(default_factory=dict)  # objects whose click gave an empty mask (left out)

    def summary(self) -> dict:
        return {
            name: {"objects": sum(len(s.objects) for s in samples), "images": len(samples),
                   "empty_left_out": self.empty.get(name, 0),
                   "mean_dice_vs_ground_truth": float(np.mean(self.dice[name])) if self.dice[name] else None}
            for name, samples in self.samples.items()
        }


def pseudo_label_samples(
    samples: Sequence[Sample],
    predictors: Mapping[str, RPSAM2Predictor],
    features: FeatureCache,
    seed: int = 0,
) -> OfflinePseudoLabels:
    """Pseudo-masks for ``samples`` from one random click per object, one set per predictor.

    The click is a uniformly drawn pixel centre of the object's ground truth, seeded by ``seed`` and the
    object's key ``sample_id/object_id`` (the same click for every predictor).  Each image is encoded
    once (``features``) for all predictors.  Masks are kept bit-packed; an empty mask is left out."""
    out = OfflinePseudoLabels({n: [] for n in predictors}, {n: [] for n in predictors}, 0, {n: 0 for n in predictors})
    for sample in samples:
        if not sample.objects:
            continue
        image = sample.load_image()
        feats = features.get(image)
        per_predictor: dict[str, list[ObjectMask]] = {n: [] for n in predictors}
        for obj in sample.objects:
            gt = obj.load()
            if not gt.any():
                continue
            key = f"{sample.sample_id}/{obj.object_id}"
            col, row = sample_points(gt, np.random.default_rng([seed, stable_hash(key)]), 1)[0]
            click = PixelClick(float(col) + 0.5, float(row) + 0.5, True)
            out.clicks += 1
            for name, predictor in predictors.items():
                mask = predictor.segment(None, [click], features=feats).mask
                if not mask.any():
                    out.empty[name] += 1
                    continue
                out.dice[name].append(dice(mask, gt))
                packed = np.packbits(mask.reshape(-1))
                per_predictor[name].append(
                    ObjectMask(obj.object_id, obj.class_name, _packed_loader(packed, mask.shape)))
        for name, objects in per_predictor.items():
            if objects:
                out.samples[name].append(Sample(sample.image_path, objects, sample_id=sample.sample_id,
                                                image_loader=sample.image_loader, meta=dict(sample.meta)))
    return out
