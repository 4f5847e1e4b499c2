"""Label Studio side of a propagation: seed masks out of an annotation, predictions for frames,
and which older propagated predictions a new propagation supersedes.  Pure functions.

- Seed: the frame task's latest annotation that is not cancelled (nor rejected in review) with
  brush regions; one object per region id (items sharing an id are OR-ed), label = its first
  brush label, ``from_name``/``to_name`` kept.  A region whose ``original_width`` /
  ``original_height`` differs from the frame's image is refused (the RLE would be misread).
- Prediction of a propagated frame: one brush region per tracked, non-empty object, with the seed
  region's id (one object keeps one region id across frames), label and controls, and its
  confidence as the region score; the prediction's score is the frame's lowest object confidence,
  so Label Studio's Data Manager sorted by prediction score shows drifting frames first.
- Superseded: older propagated predictions (``model_version`` starting "propagated from task") on
  the frames that get a new one, and every older prediction propagated from the same seed task
  (its annotation changed).  They are deleted after the new ones are uploaded, so a failed upload
  loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.core.names import propagated_from
from rpsam2_backend.engine.video.tracker import PropagatedFrame
from rpsam2_backend.labelstudio.brush import mask_to_rle, rle_to_mask
from trainer.accepted_labels import has_review_data, review_accepted
from trainer.datasets.labelstudio_export import _timestamp


@dataclass(frozen=True)
class SeedObject:
    region_id: str
    label: str
    from_name: str
    to_name: str
    mask: np.ndarray  # bool (H, W)


def brush_items(annotation: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in annotation.get("result") or []
            if isinstance(item, dict) and item.get("type") == "brushlabels"]


def _usable(annotation: Any) -> bool:
    """Not cancelled, and not rejected by its latest review (unreviewed annotations are usable: a
    propagation helps the annotator now, it does not wait for a reviewer)."""
    if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
        return False
    return not has_review_data(annotation) or review_accepted(annotation)


def latest_mask_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's latest usable annotation, if it has brush regions."""
    usable = [a for a in task.get("annotations") or [] if _usable(a)]
    if not usable:
        return None
    latest = max(usable, key=lambda a: (_timestamp(a.get("updated_at")), _timestamp(a.get("created_at")),
                                        a.get("id") or 0))
    return latest if brush_items(latest) else None


def is_annotated(task: dict[str, Any]) -> bool:
    """True when a person labelled the task (any annotation that was not cancelled)."""
    return any(isinstance(a, dict) and not a.get("was_cancelled") for a in task.get("annotations") or [])


def seed_objects(annotation: dict[str, Any], height: int, width: int, task_id: int) -> list[SeedObject]:
    """The annotation's brush regions as objects on a (height, width) frame (rules in the docstring)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for index, item in enumerate(brush_items(annotation)):
        value = item.get("value") or {}
        if value.get("format", "rle") != "rle" or "rle" not in value or not value.get("brushlabels"):
            continue  # an unlabelled or non-RLE region cannot become a labelled suggestion
        grouped.setdefault(str(item.get("id") or f"region-{index}"), []).append(item)
    objects = []
    for region_id, items in grouped.items():
        mask = np.zeros((height, width), dtype=bool)
        for item in items:
            w, h = item.get("original_width"), item.get("original_height")
            if (w, h) != (width, height):
                raise BadRequest(
                    f"task {task_id}: brush region {region_id} is {w}x{h} (original_width x original_height) "
                    f"but the task's image is {width}x{height}", status=422)
            try:
                mask |= rle_to_mask(item["value"]["rle"], height, width)
            except ValueError as exc:
                raise BadRequest(f"task {task_id}: brush region {region_id} cannot be decoded: {exc}",
                                 status=422) from exc
        if mask.any():
            first = items[0]
            objects.append(SeedObject(region_id, str(first["value"]["brushlabels"][0]), str(first.get("from_name")),
                                      str(first.get("to_name")), mask))
    return objects


def frame_prediction(
    frame: PropagatedFrame, task_id: int, objects: dict[str, SeedObject], model_version: str,
) -> dict[str, Any]:
    """The Label Studio prediction of one propagated frame (``frame.objects`` keyed by region id)."""
    regions = []
    for region_id, track in frame.objects.items():
        if not track.mask.any():
            continue  # a lost object has nothing to draw; the frame's score says it was lost
        seed = objects[str(region_id)]
        height, width = track.mask.shape
        regions.append({
            "id": seed.region_id, "from_name": seed.from_name, "to_name": seed.to_name, "type": "brushlabels",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(track.mask), "brushlabels": [seed.label]},
            "score": round(track.confidence, 6),
        })
    return {"task": int(task_id), "result": regions, "model_version": model_version,
            "score": round(frame.score, 6)}


def superseded(existing: Iterable[dict[str, Any]], covered_tasks: set[int], source_task: int) -> list[int]:
    """Ids of the older propagated predictions the new propagation replaces (rules in the docstring)."""
    found = []
    for pred in existing:
        source = propagated_from(pred.get("model_version"))
        if source is None or pred.get("id") is None:
            continue
        if int(pred.get("task") or -1) in covered_tasks or source == str(source_task):
            found.append(int(pred["id"]))
    return sorted(found)
