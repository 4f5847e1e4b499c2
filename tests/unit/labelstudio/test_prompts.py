"""Parsing the smart-tool context (keypoints, rectangles) of an interactive /predict."""

from __future__ import annotations

import copy
import math

import pytest

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.labelstudio.prompts import (
    REFINED_POINT_PREFIX,
    PercentBox,
    PercentClick,
    parse_context,
    rotated_box,
)


def _kp(
    x: object = 25.0, y: object = 50.0, label: str = "Spatula", positive: object = "missing", **extra: object
) -> dict:
    item = {
        "id": "k1",
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": 1920,
        "original_height": 1080,
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": 0.52, "keypointlabels": [label]},
    }
    if positive != "missing":
        item["is_positive"] = positive
    item.update(extra)
    return item


def _ctx(*items: dict) -> dict:
    return {"result": list(items)}


BRUSH_ITEM = {
    "type": "brushlabels",
    "from_name": "tag",
    "to_name": "image",
    "value": {"format": "rle", "rle": [0, 1, 2], "brushlabels": ["Spatula"]},
}


def test_happy_path_keeps_order_and_defaults_to_positive() -> None:
    request = parse_context(
        _ctx(
            _kp(10.0, 20.0),  # is_positive missing -> positive
            BRUSH_ITEM,  # an earlier answer in the context: ignored
            _kp(30.5, 40.25, positive=False),
            _kp(0, 100, positive=True),
        )
    )
    assert request is not None
    assert request.clicks == [
        PercentClick(10.0, 20.0, True), PercentClick(30.5, 40.25, False), PercentClick(0.0, 100.0, True)
    ]
    assert request.label == "Spatula"
    assert (request.from_name, request.to_name) == ("click", "image")
    assert (request.original_width, request.original_height) == (1920, 1080)


def test_integer_coordinates_become_floats() -> None:
    request = parse_context(_ctx(_kp(12, 7)))
    assert request is not None
    assert request.clicks[0] == PercentClick(12.0, 7.0, True)
    assert isinstance(request.clicks[0].x, float)


@pytest.mark.parametrize("context", [None, {}, {"result": None}, {"result": []}, _ctx(BRUSH_ITEM)])
def test_no_clicks_means_no_request(context: dict | None) -> None:
    assert parse_context(context) is None


def _bad(context: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        parse_context(context)  # type: ignore[arg-type]
    assert info.value.status == 400


def test_context_must_be_an_object() -> None:
    _bad(["not", "a", "dict"], "context must be an object, got list")
    _bad("text", "context must be an object, got str")


def test_result_must_be_a_list() -> None:
    _bad({"result": {"type": "keypointlabels"}}, "context.result must be a list, got dict")


def test_items_must_be_objects_with_a_type() -> None:
    _bad(_ctx("click"), r"context.result\[0\] must be an object")  # type: ignore[arg-type]
    item = _kp()
    del item["type"]
    _bad(_ctx(item), r"context.result\[0\] has no type")


def test_missing_value() -> None:
    item = _kp()
    del item["value"]
    _bad(_ctx(item), "click 1 .* has no 'value' object")


@pytest.mark.parametrize("axis", ["x", "y"])
def test_missing_coordinate(axis: str) -> None:
    item = _kp()
    del item["value"][axis]
    _bad(_ctx(_kp(), item), f"click 2 .* has no value.{axis}")


@pytest.mark.parametrize("bad", ["12", None, True, [1], float("nan"), float("inf")])
def test_non_numeric_coordinate(bad: object) -> None:
    _bad(_ctx(_kp(x=bad)), "value.x must be (a number|finite)")
    _bad(_ctx(_kp(y=bad)), "value.y must be (a number|finite)")


@pytest.mark.parametrize(("x", "y"), [(-0.01, 50), (100.01, 50), (50, -5), (50, 250)])
def test_coordinate_outside_the_image(x: float, y: float) -> None:
    _bad(_ctx(_kp(x, y)), "outside the image")


def test_missing_or_empty_keypointlabels() -> None:
    item = _kp()
    del item["value"]["keypointlabels"]
    _bad(_ctx(item), "has no value.keypointlabels")
    item = _kp()
    item["value"]["keypointlabels"] = []
    _bad(_ctx(item), "has no value.keypointlabels")
    item = _kp()
    item["value"]["keypointlabels"] = [""]
    _bad(_ctx(item), "must be label names")


def test_one_click_with_two_labels_takes_the_first_as_the_editor_groups_by() -> None:
    item = _kp()
    item["value"]["keypointlabels"] = ["Gauge", "Spatula"]
    other = _kp(x=30.0, label="Gauge")
    request = parse_context(_ctx(other, item))
    assert request is not None and request.label == "Gauge" and len(request.clicks) == 2


def test_clicks_with_different_labels_name_them() -> None:
    with pytest.raises(BadRequest) as info:
        parse_context(_ctx(_kp(label="Spatula"), _kp(label="Gauge", positive=False)))
    assert "same label" in info.value.message
    assert "click 1: 'Spatula'" in info.value.message
    assert "click 2: 'Gauge'" in info.value.message


def test_negative_only_clicks_are_a_request_without_positive_clicks() -> None:
    # Not an error: the web face answers "no mask" (an error would only vanish in the editor).
    request = parse_context(_ctx(_kp(positive=False), _kp(30, 30, positive=False)))
    assert request is not None and request.box is None
    assert [c.positive for c in request.clicks] == [False, False]


def test_is_positive_must_be_boolean() -> None:
    _bad(_ctx(_kp(positive="yes")), "is_positive must be true or false")


@pytest.mark.parametrize("key", ["original_width", "original_height"])
@pytest.mark.parametrize("bad", ["missing", None, 0, -3, 12.5, "640"])
def test_missing_or_non_positive_original_size(key: str, bad: object) -> None:
    item = _kp()
    if bad == "missing":
        del item[key]
    else:
        item[key] = bad
    with pytest.raises(BadRequest, match=key):
        parse_context(_ctx(item))


def test_missing_names() -> None:
    item = _kp()
    del item["from_name"]
    _bad(_ctx(item), "no from_name")
    item = _kp()
    item["to_name"] = ""
    _bad(_ctx(item), "no to_name")


def test_clicks_on_two_images() -> None:
    _bad(_ctx(_kp(), _kp(to_name="other")), "different images")


def test_input_is_not_modified() -> None:
    context = _ctx(_kp(), _kp(positive=False))
    before = copy.deepcopy(context)
    parse_context(context)
    assert context == before


# --- what the editor sends besides one image's keypoints --------------------------------------


def _rect(x: float = 10.0, y: float = 20.0, w: float = 30.0, h: float = 40.0, rotation: float = 0,
          label: str = "Spatula", **extra: object) -> dict:
    # Exactly what RectRegion.serialize sends from a smart rectangle (no is_positive, no labels).
    item = {
        "original_width": 1920, "original_height": 1080, "image_rotation": 0,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]},
        "id": "r1", "from_name": "box", "to_name": "image", "type": "rectanglelabels", "origin": "manual",
    }
    item.update(extra)
    return item


def test_smart_rectangle_is_a_box_prompt() -> None:
    request = parse_context(_ctx(_rect()))
    assert request is not None
    assert request.box == PercentBox(10.0, 20.0, 40.0, 60.0)
    assert request.clicks == []
    assert (request.label, request.from_name, request.to_name) == ("Spatula", "box", "image")


def test_the_newest_rectangle_is_the_box_and_keypoints_of_the_label_are_its_points() -> None:
    # The editor never mixes types; an API client may send keypoints with the rectangle.
    request = parse_context(_ctx(_rect(0, 0, 5, 5), _kp(30.0, 40.0), _kp(31.0, 41.0, positive=False),
                                 _rect(20, 30, 10, 10)))
    assert request is not None
    assert request.box == PercentBox(20.0, 30.0, 30.0, 40.0)
    assert request.clicks == [PercentClick(30.0, 40.0, True), PercentClick(31.0, 41.0, False)]
    assert request.from_name == "box"


def test_rectangle_with_another_label_than_the_keypoints_is_refused() -> None:
    _bad(_ctx(_kp(label="Gauge"), _rect(label="Spatula")), "same label.*click 1: 'Gauge'.*box 1: 'Spatula'")


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [("width", 0, "no area"), ("height", -2, "no area"), ("x", 130, "outside the image"),
     ("rotation", "9", "rotation must be a number")],
)
def test_bad_rectangles(field: str, bad: object, message: str) -> None:
    item = _rect()
    item["value"][field] = bad
    _bad(_ctx(item), message)


def test_rotated_rectangle_gives_the_bounding_box_of_its_corners_in_pixels() -> None:
    # 100x50 px rectangle at (200, 100) px of a 400x200 image, turned 90 deg clockwise about its
    # top-left corner (y points down): it now spans x 150..200, y 100..200.
    box = rotated_box((50.0, 50.0, 25.0, 25.0, 90.0), 400, 200)
    assert box.x0 == pytest.approx(37.5) and box.x1 == pytest.approx(50.0)
    assert box.y0 == pytest.approx(50.0) and box.y1 == pytest.approx(100.0)
    # 45 deg: corners (200,100), (270.7,170.7), (235.4,206.1) clipped at 200, (164.6,135.4)
    box = rotated_box((50.0, 50.0, 25.0, 25.0, 45.0), 400, 200)
    half = 50 * math.sqrt(0.5)
    assert box.x0 == pytest.approx((200 - half) / 4) and box.x1 == pytest.approx((200 + 100 * math.sqrt(0.5)) / 4)
    assert box.y0 == pytest.approx(50.0) and box.y1 == pytest.approx(100.0)  # clipped to the image


def test_rotated_rectangle_outside_the_image_is_refused() -> None:
    _bad(_ctx(_rect(0.0, 0.0, 10, 10, rotation=180)), "outside the image")


def test_multi_image_prompts_on_other_items_are_left_out_and_item_index_is_kept() -> None:
    # getConnectedDynamicRegions does not filter by item_index: clicks on page 0 ride along.
    request = parse_context(_ctx(
        _kp(10.0, 10.0, item_index=0), _kp(20.0, 20.0, item_index=1), _kp(30.0, 30.0, item_index=0, positive=False),
        _kp(40.0, 40.0, item_index=1),
    ))
    assert request is not None
    assert request.item_index == 1
    assert request.clicks == [PercentClick(20.0, 20.0, True), PercentClick(40.0, 40.0, True)]
    assert request.other_items == 2


def test_single_image_tags_have_no_item_index() -> None:
    request = parse_context(_ctx(_kp()))
    assert request is not None and request.item_index is None and request.other_items == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_bad_item_index(bad: object) -> None:
    _bad(_ctx(_kp(item_index=bad)), "item_index must be a non-negative whole number")


def test_image_rotation_is_kept_as_sent() -> None:
    request = parse_context(_ctx(_kp(image_rotation=90)))
    assert request is not None and request.image_rotation == 90.0
    _bad(_ctx(_kp(image_rotation="90")), "image_rotation must be a number")


def test_our_refined_point_suggestion_is_not_a_click() -> None:
    echo = _kp(99.0, 99.0, id=REFINED_POINT_PREFIX + "abc", dynamic=True)
    request = parse_context(_ctx(_kp(10.0, 10.0), echo))
    assert request is not None and request.clicks == [PercentClick(10.0, 10.0, True)]
    assert parse_context(_ctx(echo)) is None


def test_size_and_names_come_from_the_newest_prompt() -> None:
    request = parse_context(_ctx(_kp(original_width=10, original_height=10), _kp(20.0, 20.0)))
    assert request is not None and (request.original_width, request.original_height) == (1920, 1080)
