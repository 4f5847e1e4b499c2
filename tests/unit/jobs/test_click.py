"""The click job: RLE bytes out of the job, the same mask as a JSON list out of /predict."""

from __future__ import annotations

import numpy as np
import pytest

from rpsam2_backend.labelstudio.brush import rle_to_mask
from tests.support.backend_app import click, predict_body, the_mask


def test_segment_job_returns_rle_bytes_that_predict_writes_as_a_json_list(backend):
    """Jobs return the RLE as bytes (cheap through Redis); /predict still answers a list of ints."""
    from rpsam2_backend.jobs.click import segment_job

    client, _ = backend
    result = segment_job({"image_url": "/data/local-files/?d=voc.png", "clicks": [{"x": 35.0, "y": 45.0}]})
    assert type(result["rle"]) is bytes
    assert (result["height"], result["width"]) == (375, 500)
    assert 0 < result["decode_seconds"] <= result["seconds"]
    job_mask = rle_to_mask(result["rle"], 375, 500)
    assert job_mask.sum() == result["area"] > 0

    resp = client.post("/predict", json=predict_body([click(35.0, 45.0)]))
    assert resp.status_code == 200, resp.data
    assert b'"rle":[' in resp.data  # a compact JSON array in the body, not a string or an object
    rle = resp.get_json()["results"][0]["result"][0]["value"]["rle"]
    assert isinstance(rle, list) and all(type(v) is int and 0 <= v <= 255 for v in rle)
    assert rle == list(result["rle"])
    np.testing.assert_array_equal(rle_to_mask(rle, 375, 500), job_mask)
    mask, _ = the_mask(resp)  # and the sdk decoder agrees
    np.testing.assert_array_equal(mask, job_mask)


def test_segment_job_payload_checks(backend):
    from rpsam2_backend.core.errors import BadRequest, ImageError
    from rpsam2_backend.jobs.click import segment_job

    url = "/data/local-files/?d=voc.png"
    with pytest.raises(BadRequest, match="output must be one of"):
        segment_job({"image_url": url, "clicks": [{"x": 5.0, "y": 5.0}], "output": "svg"})
    with pytest.raises(BadRequest, match="no clicks"):
        segment_job({"image_url": url, "clicks": []})  # no box either
    with pytest.raises(BadRequest, match="malformed box"):
        segment_job({"image_url": url, "clicks": [], "box": {"x0": 1.0}})
    with pytest.raises(ImageError, match="500x375") as info:
        segment_job({"image_url": url, "clicks": [{"x": 5.0, "y": 5.0}], "original_width": 500,
                     "original_height": 376})
    assert info.value.status == 422
    # A box at the image edge (percent rounding a hair past 100) is clipped, not refused.
    result = segment_job({"image_url": url, "clicks": [], "box": {"x0": 50.0, "y0": 50.0, "x1": 100.0000001,
                                                                   "y1": 100.0}})
    assert result["object_found"] and result["objects"] == 1 and result["object_clicks"] == 0
    assert result["refined_point"] is None


def test_segment_job_polygon_output_and_negative_only(backend):
    from rpsam2_backend.jobs.click import segment_job

    url = "/data/local-files/?d=voc.png"
    polygon = segment_job({"image_url": url, "clicks": [{"x": 35.0, "y": 45.0}], "output": "polygon"})
    brush = segment_job({"image_url": url, "clicks": [{"x": 35.0, "y": 45.0}]})
    from rpsam2_backend.labelstudio.polygons import mask_to_polygons

    assert polygon["rle"] is None and polygon["area"] == brush["area"] > 0
    assert polygon["polygons"] == mask_to_polygons(rle_to_mask(brush["rle"], 375, 500))
    nothing = segment_job({"image_url": url, "clicks": [{"x": 35.0, "y": 45.0, "positive": False}]})
    assert nothing["object_found"] is False and nothing["rle"] is None and nothing["objects"] == 0


def test_replaying_a_context_decodes_only_the_new_prompt(backend, voc):
    """The n-th click of an object needs the masks of every earlier prefix (the object rule); the
    previous request decoded them, so a request costs one decode, and the answer is unchanged."""
    from rpsam2_backend.engine.embedding_cache import image_key
    from rpsam2_backend.engine.predictor import PixelClick
    from rpsam2_backend.jobs.click import segment_job

    _, runtime = backend
    url = "/data/local-files/?d=voc.png"
    pct = [(41.1, 37.3), (43.3, 39.9), (40.2, 35.7), (44.4, 41.5)]  # one object (speckle: all near)
    for n in range(1, len(pct) + 1):
        clicks = [{"x": x, "y": y, "positive": True} for x, y in pct[:n]]
        result = segment_job({"image_url": url, "clicks": clicks, "object_margin_pct": 3.0})
        assert (result["objects"], result["object_clicks"], result["decodes"]) == (1, n, 1)
    again = segment_job({"image_url": url, "clicks": clicks, "object_margin_pct": 3.0})
    assert again["decodes"] == 0 and again["rle"] == result["rle"]

    features = runtime.cache.get(image_key(voc["rgb"]))
    fresh = runtime.predictor.segment(
        None, [PixelClick(x / 100 * 500, y / 100 * 375) for x, y in pct], features=features)
    np.testing.assert_array_equal(rle_to_mask(result["rle"], 375, 500), fresh.mask)


def test_a_new_model_version_decodes_again(backend, monkeypatch):
    from rpsam2_backend.jobs.click import segment_job

    _, runtime = backend
    payload = {"image_url": "/data/local-files/?d=voc.png", "clicks": [{"x": 61.7, "y": 22.9}]}
    segment_job(payload)
    assert segment_job(payload)["decodes"] == 0
    monkeypatch.setattr(runtime.predictor, "decoder_version", "ft-test")  # what a promotion changes
    assert segment_job(payload)["decodes"] == 1
    monkeypatch.undo()
    runtime.predictor.set_shift_block(None)  # a swap under the same (empty) version name
    assert segment_job(payload)["decodes"] == 1


def test_margin_in_the_payload_is_checked(backend):
    from rpsam2_backend.core.errors import BadRequest
    from rpsam2_backend.jobs.click import segment_job

    url = "/data/local-files/?d=voc.png"
    for bad in ("wide", float("nan"), -1.0, 101.0):
        with pytest.raises(BadRequest, match="object_margin_pct"):
            segment_job({"image_url": url, "clicks": [{"x": 5.0, "y": 5.0}], "object_margin_pct": bad})
