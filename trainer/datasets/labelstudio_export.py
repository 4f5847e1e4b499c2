"""A Label Studio JSON export (the "JSON" export: a list of tasks) of brush annotations.

Each task: ``data[image_key]`` (the image URL) and ``annotations[]``, each with ``id``,
``updated_at``, ``was_cancelled`` and ``result[]``.  A brush region is a result item of type
``brushlabels`` with ``id`` (the region id), ``original_width``, ``original_height`` and
``value: {format: "rle", rle: [...], brushlabels: [label]}``.

Decisions:
- Per task the latest usable annotation is used: cancelled ("skipped") ones are ignored, the
  latest is the one with the greatest ``updated_at`` (then ``id``).  Tasks with none are skipped;
  an annotation without brush regions gives a sample with no objects.  Predictions are ignored.
- One object per region id (items sharing an id are OR-ed), class = its first brush label.
- Masks are decoded lazily from the RLE with ``rpsam2_backend.labelstudio.brush.rle_to_mask``.
- Images are resolved lazily by ``resolve_image(url) -> local path or RGB array``.  The default
  resolver maps ``/data/local-files/?d=REL`` to ``root/REL`` and any other URL path to
  ``root/<path without leading slash>`` (absolute paths that exist are used as they are);
  ``http(s)://``, ``s3://`` etc. need a resolver from the caller.  ``Sample.image_path`` is the URL.
- Sample ids are ``task-<task id>``.  Label Studio exports carry no splits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from rpsam2_backend.labelstudio.brush import rle_to_mask
from trainer.datasets.base import Dataset, ImageSource, ObjectMask, Sample

log = logging.getLogger(__name__)

ImageResolver = Callable[[str], ImageSource]


def default_resolver(root: str | Path) -> ImageResolver:
    """Resolve Label Studio image URLs to files under ``root`` (see module docstring)."""
    base = Path(root)

    def resolve(url: str) -> Path:
        parsed = urlparse(url)
        if parsed.scheme not in ("", "file"):
            raise ValueError(f"cannot open {url!r} without a resolve_image callable (remote URL)")
        if parsed.path.rstrip("/").endswith("/data/local-files") or "d" in parse_qs(parsed.query):
            relative = parse_qs(parsed.query).get("d", [""])[0]
            if not relative:
                raise ValueError(f"local-files URL without ?d=: {url!r}")
            return base / unquote(relative).lstrip("/")
        path = Path(unquote(parsed.path))
        if path.is_absolute() and path.is_file():
            return path
        return base / str(path).lstrip("/")

    return resolve


def _timestamp(value: Any) -> float:
    if not value:
        return float("-inf")
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("-inf")


def latest_annotation(task: dict) -> dict | None:
    """The task's latest annotation that was not cancelled, or None."""
    usable = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not usable:
        return None
    return max(usable, key=lambda a: (_timestamp(a.get("updated_at")), _timestamp(a.get("created_at")),
                                      a.get("id") or 0))


def _region_loader(items: list[dict]) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        mask = None
        for item in items:
            height, width = int(item["original_height"]), int(item["original_width"])
            part = rle_to_mask(item["value"]["rle"], height, width)
            mask = part if mask is None else mask | part
        return mask

    return load


def brush_objects(annotation: dict) -> list[ObjectMask]:
    """One lazily decoded object per brush region of an annotation."""
    regions: dict[str, list[dict]] = {}
    for index, item in enumerate(annotation.get("result") or []):
        if item.get("type") != "brushlabels":
            continue
        value = item.get("value") or {}
        if value.get("format", "rle") != "rle" or "rle" not in value:
            log.warning("skipping brush region %s: not in RLE format", item.get("id"))
            continue
        if not value.get("brushlabels"):
            log.warning("skipping brush region %s: no label", item.get("id"))
            continue
        regions.setdefault(str(item.get("id", f"region-{index}")), []).append(item)
    return [
        ObjectMask(region_id, str(items[0]["value"]["brushlabels"][0]), _region_loader(items))
        for region_id, items in regions.items()
    ]


def load_labelstudio_export(
    path: str | Path,
    root: str | Path | None = None,
    resolve_image: ImageResolver | None = None,
    image_key: str = "image",
) -> Dataset:
    """Samples from a Label Studio JSON export; ``root`` defaults to the export's folder."""
    path = Path(path)
    tasks = json.loads(path.read_text())
    if not isinstance(tasks, list):
        kind = type(tasks).__name__
        raise ValueError(f"{path}: expected a Label Studio JSON export (a list of tasks), got a {kind}")
    resolver = resolve_image or default_resolver(root if root is not None else path.parent)

    samples = []
    unannotated = 0
    for task in tasks:
        data = task.get("data") or {}
        if image_key not in data:
            raise ValueError(f"task {task.get('id')}: no data[{image_key!r}] (keys: {sorted(data)})")
        annotation = latest_annotation(task)
        if annotation is None:
            unannotated += 1
            continue
        url = str(data[image_key])
        samples.append(
            Sample(
                image_path=url,
                objects=brush_objects(annotation),
                sample_id=f"task-{task.get('id')}",
                image_loader=lambda url=url: resolver(url),
                meta={"task_id": task.get("id"), "annotation_id": annotation.get("id")},
            )
        )
    if unannotated:
        log.info("%s: %d tasks without a usable annotation skipped", path.name, unannotated)
    return Dataset(samples, name=f"labelstudio:{path.stem}")
