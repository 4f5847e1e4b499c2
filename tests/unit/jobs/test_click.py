"""The click job: RLE bytes out of the job, the same mask as a JSON list out of /predict."""

from __future__ import annotations

import numpy as np

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
