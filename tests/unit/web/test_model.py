"""The annotator's whole session through the real Flask app (random-weight hiera_t): several objects
of one label, negative clicks, boxes, polygons, multi-image tasks, view rotation, the refined point.

Every expected mask is decoded independently here with the runtime's predictor on the same image
(pixel coordinates worked out by hand from the percent the editor sends), so a test fails if the
web face, the job payload or the object rule changes the prompt that reaches SAM2.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rpsam2_backend.engine.embedding_cache import image_key
from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig
from rpsam2_backend.engine.predictor import PixelClick
from rpsam2_backend.labelstudio.brush import rle_to_mask
from rpsam2_backend.labelstudio.polygons import mask_to_polygons
from rpsam2_backend.labelstudio.prompts import REFINED_POINT_PREFIX
from rpsam2_backend.web.state import get_web_state
from tests.support.backend_app import MULTI_IMAGE_CONFIG, POLYGON_CONFIG, click, predict_body, rect

W, H = 500, 375


def _cached_features(backend, rgb, url):
    """The features the job computed for the image (a click has encoded it), from the cache."""
    client, runtime = backend
    features = runtime.cache.get(image_key(rgb))
    if features is None:
        _answer(client.post("/predict", json=predict_body([click(50.0, 50.0)], image=url)))
        features = runtime.cache.get(image_key(rgb))
    assert features is not None
    return features


@pytest.fixture(scope="module")
def voc_features(backend, voc):
    return _cached_features(backend, voc["rgb"], "/data/local-files/?d=voc.png")


def _expected(backend, features, clicks_px, box=None):
    _, runtime = backend
    clicks = [PixelClick(x, y, positive) for x, y, positive in clicks_px]
    return runtime.predictor.segment(None, clicks, features=features, box=box).mask


def _pct(col: int, row: int) -> tuple[float, float]:
    """Percent of the centre of pixel (col, row): what an editor click on that pixel sends."""
    return (col + 0.5) / W * 100.0, (row + 0.5) / H * 100.0


def _px(col: int, row: int, positive: bool = True) -> tuple[float, float, bool]:
    return col + 0.5, row + 0.5, positive


def _answer(resp) -> dict:
    assert resp.status_code == 200, resp.data
    (prediction,) = resp.get_json()["results"]
    return prediction


def _brush(region: dict) -> np.ndarray:
    return rle_to_mask(region["value"]["rle"], region["original_height"], region["original_width"])


def _pixel_where(mask: np.ndarray, value: bool, avoid: list[np.ndarray] = ()) -> tuple[int, int]:
    """A pixel deep inside the region where ``mask == value`` (and outside every ``avoid`` mask),
    away from the border, so the choice does not hinge on one pixel of a speckled mask."""
    ok = mask == value
    for other in avoid:
        ok &= ~other
    # keep pixels whose 3x3 neighbourhood is all ok (random-weight masks are speckled)
    core = ok.copy()
    for dy in range(-1, 2):
        for dx in range(-1, 2):
            core &= np.roll(np.roll(ok, dy, 0), dx, 1)
    core[:10], core[-10:], core[:, :10], core[:, -10:] = False, False, False, False
    rows, cols = np.nonzero(core)
    assert len(rows), "no such pixel: choose other clicks"
    i = len(rows) // 2
    return int(cols[i]), int(rows[i])


# --- boxes -------------------------------------------------------------------------------------


def test_smart_rectangle_gives_a_brush_mask_of_its_label(backend, voc_features):
    client, _ = backend
    prediction = _answer(client.post("/predict", json=predict_body([rect(20.0, 20.0, 40.0, 50.0, label="Gauge")])))
    (region,) = prediction["result"]
    assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "brush", "image")
    assert region["value"]["brushlabels"] == ["Gauge"]
    # x 20..60 %, y 20..70 % of 500x375 px
    expected = _expected(backend, voc_features, [], box=(100.0, 75.0, 300.0, 262.5))
    np.testing.assert_array_equal(_brush(region), expected)
    assert 0 < expected.sum() < expected.size
    assert prediction["score"] > 0


def test_rotated_rectangle_prompts_with_its_bounding_box(backend, voc_features):
    client, _ = backend
    # 100x75 px at (200, 112.5) px turned 90 deg clockwise about that corner: x 125..200, y 112.5..212.5
    body = predict_body([rect(40.0, 30.0, 20.0, 20.0, rotation=90)])
    (region,) = _answer(client.post("/predict", json=body))["result"]
    expected = _expected(backend, voc_features, [], box=(125.0, 112.5, 200.0, 212.5))
    np.testing.assert_array_equal(_brush(region), expected)


def test_keypoints_sent_with_a_rectangle_are_points_of_the_box_prompt(backend, voc_features):
    client, _ = backend
    context = [click(30.0, 40.0, positive=None), click(45.0, 50.0, positive=False), rect(20.0, 20.0, 40.0, 50.0)]
    (region,) = _answer(client.post("/predict", json=predict_body(context)))["result"]
    expected = _expected(backend, voc_features, [(150.0, 150.0, True), (225.0, 187.5, False)],
                         box=(100.0, 75.0, 300.0, 262.5))
    np.testing.assert_array_equal(_brush(region), expected)
    assert (expected != _expected(backend, voc_features, [], box=(100.0, 75.0, 300.0, 262.5))).any()


# --- polygons ----------------------------------------------------------------------------------


def test_keypoint_on_a_polygon_only_project_answers_polygonlabels_in_percent(backend, voc_features):
    client, _ = backend
    prediction = _answer(client.post("/predict", json=predict_body([click(30.0, 40.0)], config=POLYGON_CONFIG)))
    regions = prediction["result"]
    expected = mask_to_polygons(_expected(backend, voc_features, [(150.0, 150.0, True)]))
    assert expected and [r["value"]["points"] for r in regions] == expected
    for region in regions:
        assert (region["type"], region["from_name"], region["to_name"]) == ("polygonlabels", "outline", "image")
        assert region["value"]["polygonlabels"] == ["Spatula"]
        assert "closed" not in region["value"]  # never closed: false (the editor would resume drawing)
        assert (region["original_width"], region["original_height"]) == (W, H)
        assert len(region["value"]["points"]) >= 3
    assert len({r["id"] for r in regions}) == len(regions)  # one region per part


def test_smart_rectangle_on_a_polygon_project(backend, voc_features):
    client, _ = backend
    regions = _answer(client.post("/predict", json=predict_body([rect(20.0, 20.0, 40.0, 50.0)],
                                                                config=POLYGON_CONFIG)))["result"]
    expected = mask_to_polygons(_expected(backend, voc_features, [], box=(100.0, 75.0, 300.0, 262.5)))
    assert [r["value"]["points"] for r in regions] == expected


# --- several objects of one label ---------------------------------------------------------------


@pytest.fixture
def no_margin(monkeypatch):
    """Random-weight masks are speckle over most of the image, so every pixel is within a few pixels
    of any mask: with the default margin no click could start a second object.  Margin 0 = on the
    mask itself, which these tests need to tell objects apart."""
    state = get_web_state()
    monkeypatch.setattr(state, "settings", state.settings.with_("web", object_margin_pct=0.0))


def test_a_positive_click_near_the_mask_refines_the_object(backend, voc_features):
    """A missed tip just outside the current mask (within RPSAM2_OBJECT_MARGIN_PCT) adds to the
    object instead of starting a new one."""
    client, _ = backend
    a = (150, 150)
    mask_a = _expected(backend, voc_features, [_px(*a)])
    b = _pixel_where(mask_a, False)  # off the mask, but speckle is everywhere: within 3 % of the diagonal
    assert get_web_state().settings.web.object_margin_pct == 3.0
    (region,) = _answer(client.post("/predict", json=predict_body([click(*_pct(*a)), click(*_pct(*b))])))["result"]
    refined = _expected(backend, voc_features, [_px(*a), _px(*b)])
    np.testing.assert_array_equal(_brush(region), refined)
    assert (refined != _expected(backend, voc_features, [_px(*b)])).any()  # not a new object of b alone


def test_second_object_of_the_same_label_gets_its_own_mask(backend, voc_features, no_margin):
    """The editor sends object 1's clicks (accepted with its own check mark) with the new click."""
    client, _ = backend
    a = (150, 150)
    mask_a = _expected(backend, voc_features, [_px(*a)])
    b = _pixel_where(mask_a, False)  # outside object 1's mask: a new object
    mask_b = _expected(backend, voc_features, [_px(*b)])
    context = [click(*_pct(*a), id="a1"), click(*_pct(*b), id="b1")]
    (region,) = _answer(client.post("/predict", json=predict_body(context)))["result"]
    np.testing.assert_array_equal(_brush(region), mask_b)
    assert (mask_b != _expected(backend, voc_features, [_px(*a), _px(*b)])).any()  # not one mask over both

    # ... then a click back inside object 1 (outside object 2) refines object 1 only.
    a2 = _pixel_where(mask_a, True, avoid=[mask_b])
    context.append(click(*_pct(*a2), id="a2"))
    (region,) = _answer(client.post("/predict", json=predict_body(context)))["result"]
    np.testing.assert_array_equal(_brush(region), _expected(backend, voc_features, [_px(*a), _px(*a2)]))


def test_negative_click_refines_the_object_whose_mask_contains_it(backend, voc_features, no_margin):
    client, _ = backend
    a = (150, 150)
    mask_a = _expected(backend, voc_features, [_px(*a)])
    b = _pixel_where(mask_a, False)
    mask_b = _expected(backend, voc_features, [_px(*b)])
    n = _pixel_where(mask_a, True, avoid=[mask_b])  # in object 1 only, although object 2 was clicked last
    context = [click(*_pct(*a)), click(*_pct(*b)), click(*_pct(*n), positive=False)]
    (region,) = _answer(client.post("/predict", json=predict_body(context)))["result"]
    expected = _expected(backend, voc_features, [_px(*a), _px(*n, positive=False)])
    np.testing.assert_array_equal(_brush(region), expected)
    assert (expected != mask_a).any()


def test_two_labels_in_any_order_are_independent_requests(backend, voc_features):
    client, _ = backend
    gauge = _answer(client.post("/predict", json=predict_body([click(70.0, 30.0, label="Gauge")])))["result"][0]
    spatula = _answer(client.post("/predict", json=predict_body([click(30.0, 40.0)])))["result"][0]
    assert gauge["value"]["brushlabels"] == ["Gauge"] and spatula["value"]["brushlabels"] == ["Spatula"]
    np.testing.assert_array_equal(_brush(gauge), _expected(backend, voc_features, [(350.0, 112.5, True)]))
    np.testing.assert_array_equal(_brush(spatula), _expected(backend, voc_features, [(150.0, 150.0, True)]))


# --- nothing to answer --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "context",
    [[click(20.0, 20.0, positive=False)], [click(20.0, 20.0, positive=False), click(60.0, 60.0, positive=False)], []],
    ids=["one negative click", "negative clicks only", "last prompt deleted"],
)
def test_nothing_to_answer_is_200_with_an_empty_result_and_a_log_line(backend, caplog, context):
    client, runtime = backend
    before = runtime.engine.encode_count
    with caplog.at_level(logging.INFO, logger="rpsam2_backend.web.model"):
        prediction = _answer(client.post("/predict", json=predict_body(context)))
    assert prediction["result"] == [] and prediction["score"] == 0.0
    assert "RANDOM-WEIGHTS" in prediction["model_version"]
    assert any("no mask" in r.getMessage() for r in caplog.records)
    assert runtime.engine.encode_count == before


# --- multi-image tasks, view rotation, image size -------------------------------------------------


def test_item_index_picks_the_page_and_comes_back(backend, arc2017):
    client, runtime = backend
    data = {"pages": ["/data/local-files/?d=voc.png", "/data/local-files/?d=arc.png"]}
    page2 = click(50.0, 50.0, item_index=1, original_width=640, original_height=480)
    # A click on page 1 rides along (the editor does not filter by item_index): left out.
    context = [click(10.0, 10.0, item_index=0), page2]
    body = predict_body(context, config=MULTI_IMAGE_CONFIG, data=data)
    (region,) = _answer(client.post("/predict", json=body))["result"]
    assert region["item_index"] == 1
    assert (region["original_width"], region["original_height"]) == (640, 480)
    features = runtime.cache.get(image_key(arc2017["rgb"]))
    np.testing.assert_array_equal(_brush(region), _expected(backend, features, [(320.0, 240.0, True)]))


def test_view_rotation_is_echoed_and_does_not_change_the_mask(backend, voc_features):
    client, _ = backend
    (plain,) = _answer(client.post("/predict", json=predict_body([click(30.0, 40.0)])))["result"]
    (turned,) = _answer(client.post("/predict", json=predict_body([click(30.0, 40.0, image_rotation=90)])))["result"]
    assert plain["image_rotation"] == 0 and turned["image_rotation"] == 90
    np.testing.assert_array_equal(_brush(plain), _brush(turned))
    assert "item_index" not in plain  # single-image tags have none


def test_an_image_of_another_size_than_the_editor_saw_is_refused(backend):
    client, _ = backend
    resp = client.post("/predict", json=predict_body([click(30.0, 40.0, original_width=640)]))
    assert resp.status_code == 422, resp.data
    detail = resp.get_json()["detail"]
    assert "640x375" in detail and "500x375" in detail


# --- where the shift block moved the click ------------------------------------------------------


@pytest.fixture
def shift_block(backend):
    _, runtime = backend
    block = ShiftBlock(ShiftBlockConfig(layers=1, scale_init=0.3, scale_init_mode="sigma"))
    with torch.no_grad():
        block.phi.weight.normal_(std=1.0, generator=torch.Generator().manual_seed(3))
    runtime.predictor.set_shift_block(block, "test")
    yield runtime
    runtime.predictor.set_shift_block(None)


def test_refined_point_comes_as_a_dynamic_keypoint_suggestion(backend, shift_block, voc_features):
    client, runtime = backend
    regions = _answer(client.post("/predict", json=predict_body([click(30.0, 40.0)])))["result"]
    brush, point = regions
    assert brush["type"] == "brushlabels"
    seg = runtime.predictor.segment(None, [PixelClick(150.0, 150.0)], features=voc_features)
    assert seg.refined_point is not None and seg.refined_point != (150.0, 150.0)
    np.testing.assert_array_equal(_brush(brush), seg.mask)
    assert point["id"].startswith(REFINED_POINT_PREFIX)
    assert (point["type"], point["from_name"], point["to_name"]) == ("keypointlabels", "kp", "image")
    assert point["dynamic"] is True and "readonly" not in point
    assert point["value"]["keypointlabels"] == ["Spatula"]
    assert point["value"]["x"] == pytest.approx(seg.refined_point[0] / W * 100)
    assert point["value"]["y"] == pytest.approx(seg.refined_point[1] / H * 100)

    # Sent back in a later context (an API client echoing the answer), it is not a click.
    echoed = {**point, "is_positive": True}
    (again, _) = _answer(client.post("/predict", json=predict_body([click(30.0, 40.0), echoed])))["result"]
    np.testing.assert_array_equal(_brush(again), seg.mask)


def test_refined_point_can_be_switched_off_and_boxes_have_none(backend, shift_block, monkeypatch):
    client, _ = backend
    (region,) = _answer(client.post("/predict", json=predict_body([rect(20.0, 20.0, 40.0, 50.0)])))["result"]
    assert region["type"] == "brushlabels"
    state = get_web_state()
    monkeypatch.setattr(state, "settings", state.settings.with_("web", show_refined_point=False))
    (region,) = _answer(client.post("/predict", json=predict_body([click(30.0, 40.0)])))["result"]
    assert region["type"] == "brushlabels"
