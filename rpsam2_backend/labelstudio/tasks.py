"""Label Studio task data -> the image URL a click, a box or an annotation was made on."""

from __future__ import annotations

from typing import Any

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.labelstudio.label_config import LabelConfig


def image_url(task: dict[str, Any], config: LabelConfig, to_name: str | None = None) -> str:
    """The task's image URL for the Image object ``to_name`` (any Image tag of the config when
    None or unknown); BadRequest naming the task's data keys when there is none."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise BadRequest("task has no 'data' object")
    images = config.images
    if to_name:
        images = tuple(img for img in images if img.name == to_name) or images
    for img in images:
        key = img.value.lstrip("$")
        if task["data"].get(key):
            return str(task["data"][key])
    keys = ", ".join(sorted(task["data"])) or "none"
    raise BadRequest(f"task {task.get('id')} has no image for {to_name or 'the Image tag'} (data keys: {keys})")
