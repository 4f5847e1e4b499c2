"""Label Studio task data -> the image URL a click, a box or an annotation was made on."""

from __future__ import annotations

from typing import Any

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.labelstudio.label_config import LabelConfig


def image_url(
    task: dict[str, Any], config: LabelConfig, to_name: str | None = None, item_index: int | None = None
) -> str:
    """The task's image URL for the Image object ``to_name`` (any Image tag of the config when
    None or unknown); BadRequest naming the task's data keys when there is none.

    A multi-image Image tag (``valueList="$images"``) holds a list of URLs: ``item_index`` (sent by
    Label Studio with every region of such a tag) picks one; None means the first.
    """
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise BadRequest("task has no 'data' object")
    data = task["data"]
    images = config.images
    if to_name:
        images = tuple(img for img in images if img.name == to_name) or images
    for img in images:
        if img.value_list:
            urls = data.get(img.value_list.lstrip("$"))
            if isinstance(urls, list) and urls:
                index = item_index or 0
                if not 0 <= index < len(urls):
                    raise BadRequest(
                        f"item_index {index} is outside the {len(urls)} images of task {task.get('id')} "
                        f"({img.value_list})"
                    )
                if not isinstance(urls[index], str) or not urls[index]:
                    raise BadRequest(f"task {task.get('id')} {img.value_list}[{index}] is not an image URL")
                return urls[index]
            continue
        key = img.value.lstrip("$")
        if data.get(key):
            return str(data[key])
    keys = ", ".join(sorted(data)) or "none"
    raise BadRequest(f"task {task.get('id')} has no image for {to_name or 'the Image tag'} (data keys: {keys})")
