"""Smart-keypoint clicks from the ``context`` Label Studio sends with an interactive /predict.

Coordinates stay in percent of the image (what Label Studio sends); the job converts them to
pixels of the image it actually loaded, so a resized or re-encoded image cannot shift the click.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rpsam2_backend.core.errors import BadRequest

KEYPOINT_TYPE = "keypointlabels"


@dataclass(frozen=True)
class PercentClick:
    """A click as Label Studio sends it: percent of the image, whatever its pixel size."""

    x: float  # percent of the image width, 0..100
    y: float  # percent of the image height, 0..100
    positive: bool


@dataclass(frozen=True)
class ClickRequest:
    clicks: list[PercentClick]  # in the order the annotator made them
    label: str
    from_name: str  # the KeyPointLabels control
    to_name: str  # the Image object clicked on
    original_width: int
    original_height: int


def _number(value: object, what: str) -> float:
    # bool is an int subclass; a JSON true/false here is a client bug, not a coordinate.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise BadRequest(f"{what} must be finite, got {value!r}")
    return float(value)


def _size(item: dict, key: str, where: str) -> int:
    if key not in item or item[key] is None:
        raise BadRequest(f"{where} has no {key}")
    value = _number(item[key], f"{where} {key}")
    if value <= 0 or value != int(value):
        raise BadRequest(f"{where} {key} must be a positive whole number of pixels, got {item[key]!r}")
    return int(value)


def _click(item: dict, where: str) -> tuple[PercentClick, str]:
    value = item.get("value")
    if not isinstance(value, dict):
        raise BadRequest(f"{where} has no 'value' object")
    coords = []
    for axis in ("x", "y"):
        if axis not in value:
            raise BadRequest(f"{where} has no value.{axis}")
        number = _number(value[axis], f"{where} value.{axis}")
        if not 0.0 <= number <= 100.0:
            raise BadRequest(f"{where} value.{axis}={number} is outside the image (0..100 percent)")
        coords.append(number)

    labels = value.get("keypointlabels")
    if not isinstance(labels, list) or not labels:
        raise BadRequest(f"{where} has no value.keypointlabels: pick a label before clicking")
    if not all(isinstance(label, str) and label for label in labels):
        raise BadRequest(f"{where} value.keypointlabels must be label names, got {labels!r}")
    if len(set(labels)) > 1:
        raise BadRequest(f"{where} carries several labels {labels!r}; a click segments one object")

    positive = item.get("is_positive", value.get("is_positive"))
    if positive is None:
        positive = True  # Label Studio leaves it out for plain (positive) clicks
    elif not isinstance(positive, bool):
        raise BadRequest(f"{where} is_positive must be true or false, got {positive!r}")
    return PercentClick(coords[0], coords[1], positive), labels[0]


def parse_context(context: dict | None) -> ClickRequest | None:
    """The clicks of one interactive request, or None when there are none (no prediction).

    Items other than keypoints (e.g. the brush mask of an earlier answer) are ignored.
    """
    if context is None:
        return None
    if not isinstance(context, dict):
        raise BadRequest(f"context must be an object, got {type(context).__name__}")
    result = context.get("result")
    if result is None:
        return None
    if not isinstance(result, list):
        raise BadRequest(f"context.result must be a list, got {type(result).__name__}")

    clicks: list[PercentClick] = []
    labels: list[str] = []
    first: dict | None = None
    for index, item in enumerate(result, start=1):
        where = f"context.result[{index - 1}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object, got {type(item).__name__}")
        kind = item.get("type")
        if not isinstance(kind, str):
            raise BadRequest(f"{where} has no type")
        if kind.lower() != KEYPOINT_TYPE:
            continue
        click, label = _click(item, f"click {len(clicks) + 1} ({where})")
        clicks.append(click)
        labels.append(label)
        if first is None:
            first = item

    if not clicks or first is None:
        return None
    if len(set(labels)) > 1:
        seen = ", ".join(f"click {i + 1}: {label!r}" for i, label in enumerate(labels))
        raise BadRequest(f"all clicks of one request must have the same label, got {seen}")
    if not any(c.positive for c in clicks):
        raise BadRequest(
            f"all {len(clicks)} click(s) are negative; at least one positive click must mark the object"
        )

    where = "the first click"
    width = _size(first, "original_width", where)
    height = _size(first, "original_height", where)
    from_name = first.get("from_name")
    to_name = first.get("to_name")
    if not isinstance(from_name, str) or not from_name:
        raise BadRequest(f"{where} has no from_name (the KeyPointLabels control)")
    if not isinstance(to_name, str) or not to_name:
        raise BadRequest(f"{where} has no to_name (the Image it was made on)")
    for item in result:
        if isinstance(item, dict) and str(item.get("type", "")).lower() == KEYPOINT_TYPE:
            if item.get("to_name", to_name) != to_name:
                raise BadRequest(
                    f"clicks were made on different images ({to_name!r} and {item.get('to_name')!r})"
                )
    return ClickRequest(clicks, labels[0], from_name, to_name, width, height)
