"""Parsing the smart-keypoint context of an interactive /predict."""

from __future__ import annotations

import copy

import pytest

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.labelstudio.clicks import PercentClick, parse_context


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


def test_one_click_with_two_labels() -> None:
    item = _kp()
    item["value"]["keypointlabels"] = ["Spatula", "Gauge"]
    _bad(_ctx(item), "several labels")


def test_clicks_with_different_labels_name_them() -> None:
    with pytest.raises(BadRequest) as info:
        parse_context(_ctx(_kp(label="Spatula"), _kp(label="Gauge", positive=False)))
    assert "same label" in info.value.message
    assert "click 1: 'Spatula'" in info.value.message
    assert "click 2: 'Gauge'" in info.value.message


def test_negative_only_clicks() -> None:
    _bad(_ctx(_kp(positive=False), _kp(positive=False)), "all 2 click.* are negative")


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
