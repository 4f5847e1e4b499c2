"""Smart-tool prompts (keypoint clicks, rectangles) from the ``context`` of an interactive /predict.

What Label Studio 1.23's editor sends (read from its source, checked in headless Chromium): on
every smart click or smart rectangle, ``context.result`` holds every region of the same type and
the same first label on the same Image tag, the newest last.  Keypoints carry top-level
``is_positive`` (Alt+click: false; keypoints reloaded from a draft come without it: positive);
rectangles carry ``value.{x, y, width, height, rotation}`` (top-left corner before a clockwise
rotation about it).  Multi-image tags add ``item_index`` and do *not* filter by it, so prompts
made on other images of the task can ride along: only those on the newest prompt's image count.

Coordinates stay in percent of the image (what Label Studio sends); the job converts them to
pixels of the image it actually loaded, after checking that its size is the one the editor saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rpsam2_backend.core.errors import BadRequest

KEYPOINT_TYPE = "keypointlabels"
RECTANGLE_TYPE = "rectanglelabels"
PROMPT_TYPES = (KEYPOINT_TYPE, RECTANGLE_TYPE)
# Id prefix of the keypoint suggestion that shows where the shift block moved the click: should it
# ever come back in a context (an API client echoing our answer), it is not a click.
REFINED_POINT_PREFIX = "rpsam2-refined-"


@dataclass(frozen=True)
class PercentClick:
    """A click as Label Studio sends it: percent of the image, whatever its pixel size."""

    x: float  # percent of the image width, 0..100
    y: float  # percent of the image height, 0..100
    positive: bool


@dataclass(frozen=True)
class PercentBox:
    """An axis-aligned box in percent of the image (a rotated rectangle's bounding box)."""

    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True)
class PromptRequest:
    clicks: list[PercentClick]  # in the order the annotator made them, on the newest prompt's image
    box: PercentBox | None  # the newest rectangle, if the context holds rectangles
    label: str
    from_name: str  # the control of the newest prompt (KeyPointLabels or RectangleLabels)
    to_name: str  # the Image object prompted on
    original_width: int  # the image's natural size as the editor loaded it
    original_height: int
    item_index: int | None  # which image of a multi-image tag; None for a single-image tag
    image_rotation: float  # the editor's view rotation (coordinates are of the unrotated image)
    other_items: int = 0  # prompts on other images of a multi-image tag, left out


@dataclass(frozen=True)
class _Prompt:
    kind: str
    item: dict
    label: str
    where: str
    click: PercentClick | None = None
    rect: tuple[float, float, float, float, float] | None = None  # x, y, width, height (%), rotation (deg)


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


def _percent(value: dict, axis: str, where: str) -> float:
    if axis not in value:
        raise BadRequest(f"{where} has no value.{axis}")
    number = _number(value[axis], f"{where} value.{axis}")
    if not 0.0 <= number <= 100.0:
        raise BadRequest(f"{where} value.{axis}={number} is outside the image (0..100 percent)")
    return number


def _label(value: dict, key: str, where: str) -> str:
    labels = value.get(key)
    if not isinstance(labels, list) or not labels:
        raise BadRequest(f"{where} has no value.{key}: pick a label before prompting")
    if not all(isinstance(label, str) and label for label in labels):
        raise BadRequest(f"{where} value.{key} must be label names, got {labels!r}")
    # With choice="multiple" a click may carry several labels; the editor groups prompts by the
    # first one (getConnectedDynamicRegions), so its mask gets that label too.
    return labels[0]


def _parse(item: dict, kind: str, where: str) -> _Prompt:
    value = item.get("value")
    if not isinstance(value, dict):
        raise BadRequest(f"{where} has no 'value' object")
    if kind == KEYPOINT_TYPE:
        x, y = _percent(value, "x", where), _percent(value, "y", where)
        label = _label(value, KEYPOINT_TYPE, where)
        positive = item.get("is_positive", value.get("is_positive"))
        if positive is None:
            positive = True  # Label Studio leaves it out for plain clicks and draft keypoints
        elif not isinstance(positive, bool):
            raise BadRequest(f"{where} is_positive must be true or false, got {positive!r}")
        return _Prompt(kind, item, label, where, click=PercentClick(x, y, positive))
    x, y = _percent(value, "x", where), _percent(value, "y", where)
    width, height = (_number(value.get(k), f"{where} value.{k}") for k in ("width", "height"))
    if width <= 0 or height <= 0:
        raise BadRequest(f"{where} has no area (width {width}, height {height} percent)")
    rotation = _number(value.get("rotation", 0) or 0, f"{where} value.rotation")
    label = _label(value, RECTANGLE_TYPE, where)
    return _Prompt(kind, item, label, where, rect=(x, y, width, height, rotation))


def _item_index(item: dict, where: str) -> int | None:
    index = item.get("item_index")
    if index is None:
        return None
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise BadRequest(f"{where} item_index must be a non-negative whole number, got {index!r}")
    return index


def rotated_box(rect: tuple[float, float, float, float, float], width: int, height: int) -> PercentBox:
    """Axis-aligned bounding box (percent, clipped to the image) of a Label Studio rectangle.

    Label Studio rotates the rectangle clockwise on screen (y down) about its top-left corner
    ``(x, y)``.  Percent is not isotropic (the image is not square), so the corners are rotated in
    pixels.  SAM2 takes axis-aligned boxes only: a rotated rectangle prompts with the box around it.
    """
    x, y, w, h, rotation = rect
    px, py, pw, ph = x / 100 * width, y / 100 * height, w / 100 * width, h / 100 * height
    cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    corners = [(px + dx * cos - dy * sin, py + dx * sin + dy * cos) for dx, dy in ((0, 0), (pw, 0), (pw, ph), (0, ph))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    x0, x1 = max(0.0, min(xs)), min(float(width), max(xs))
    y0, y1 = max(0.0, min(ys)), min(float(height), max(ys))
    if x1 <= x0 or y1 <= y0:
        raise BadRequest(f"the rectangle {rect[:4]} (rotation {rotation} deg) lies outside the image")
    return PercentBox(x0 / width * 100, y0 / height * 100, x1 / width * 100, y1 / height * 100)


def parse_context(context: dict | None) -> PromptRequest | None:
    """The prompts of one interactive request, or None when there are none (no prediction).

    Items other than keypoints and rectangles (e.g. a brush mask) are ignored, and so is our own
    refined-point suggestion should it come back.
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

    prompts: list[_Prompt] = []
    counts = {KEYPOINT_TYPE: 0, RECTANGLE_TYPE: 0}
    for index, item in enumerate(result):
        where = f"context.result[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object, got {type(item).__name__}")
        kind = item.get("type")
        if not isinstance(kind, str):
            raise BadRequest(f"{where} has no type")
        kind = kind.lower()
        if kind not in PROMPT_TYPES or str(item.get("id", "")).startswith(REFINED_POINT_PREFIX):
            continue
        counts[kind] += 1
        name = "click" if kind == KEYPOINT_TYPE else "box"
        prompts.append(_parse(item, kind, f"{name} {counts[kind]} ({where})"))
    if not prompts:
        return None

    newest = prompts[-1]
    item_index = _item_index(newest.item, newest.where)
    same_item = [p for p in prompts if _item_index(p.item, p.where) == item_index]
    labels = {p.label for p in same_item}
    if len(labels) > 1:
        seen = ", ".join(f"{p.where.split(' (')[0]}: {p.label!r}" for p in same_item)
        raise BadRequest(f"all prompts of one request must have the same label, got {seen}")

    where = newest.where.split(" (")[0]
    width = _size(newest.item, "original_width", where)
    height = _size(newest.item, "original_height", where)
    from_name, to_name = newest.item.get("from_name"), newest.item.get("to_name")
    if not isinstance(from_name, str) or not from_name:
        raise BadRequest(f"{where} has no from_name (the control it was made with)")
    if not isinstance(to_name, str) or not to_name:
        raise BadRequest(f"{where} has no to_name (the Image it was made on)")
    for p in same_item:
        if p.item.get("to_name", to_name) != to_name:
            raise BadRequest(f"prompts were made on different images ({to_name!r} and {p.item.get('to_name')!r})")
    rotation = newest.item.get("image_rotation") or 0
    rotation = _number(rotation, f"{where} image_rotation")

    rects = [p.rect for p in same_item if p.rect is not None]
    return PromptRequest(
        clicks=[p.click for p in same_item if p.click is not None],
        box=rotated_box(rects[-1], width, height) if rects else None,
        label=newest.label,
        from_name=from_name,
        to_name=to_name,
        original_width=width,
        original_height=height,
        item_index=item_index,
        image_rotation=rotation,
        other_items=len(prompts) - len(same_item),
    )
