"""A click becomes a mask: /setup, /predict and every bad input, through the real Flask app
(label-studio-ml 1.0.9 routes) with real sam2 code (random-weight hiera_t)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from rpsam2_backend.jobs.runtime import Runtime, set_runtime
from rpsam2_backend.labelstudio.brush import rle_to_mask
from rpsam2_backend.web.app import create_app
from tests.conftest import make_random_settings, save_png

CONFIG = """
<View>
  <Image name="image" value="$image" zoom="true"/>
  <KeyPointLabels name="kp" toName="image" smart="true">
    <Label value="Spatula"/><Label value="Gauge"/><Label value="Cornea"/>
  </KeyPointLabels>
  <BrushLabels name="brush" toName="image">
    <Label value="Spatula"/><Label value="Gauge"/>
  </BrushLabels>
</View>
"""


@pytest.fixture(scope="module")
def backend(sam2_engine, voc, tmp_path_factory):
    # One app and one embedding cache for the module: encoding is the slow part on CPU.
    tmp_path = tmp_path_factory.mktemp("backend")
    random_settings = make_random_settings(tmp_path)
    root = tmp_path / "files"
    save_png(root / "voc.png", voc["rgb"])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (root / "empty.png").write_bytes(b"")
    runtime = Runtime(random_settings, engine=sam2_engine)
    set_runtime(runtime)
    app = create_app(random_settings, warm=False)
    client = app.test_client()
    resp = client.post("/setup", json={"project": "1.1", "schema": CONFIG})
    assert resp.status_code == 200, resp.data
    yield client, runtime
    set_runtime(None)


def click(x: float, y: float, label: str = "Spatula", positive: bool | None = True, **extra) -> dict:
    item = {
        "type": "keypointlabels",
        "from_name": "kp",
        "to_name": "image",
        "original_width": 500,
        "original_height": 375,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]},
        **extra,
    }
    if positive is not None:
        item["is_positive"] = positive
    return item


def predict_body(clicks: list[dict] | None, image: str = "/data/local-files/?d=voc.png") -> dict:
    params = {"context": {"result": clicks}} if clicks is not None else {}
    return {"tasks": [{"id": 7, "data": {"image": image}}], "label_config": CONFIG, "params": params}


def the_mask(resp) -> tuple[np.ndarray, dict]:
    assert resp.status_code == 200, resp.data
    result = resp.get_json()["results"][0]["result"][0]
    h, w = result["original_height"], result["original_width"]
    flat = decode_rle(result["value"]["rle"])
    return flat.reshape(h, w, 4)[:, :, 3] > 0, result


def test_click_returns_brush_mask_of_image_size(backend):
    client, _ = backend
    resp = client.post("/predict", json=predict_body([click(30.0, 40.0)]))
    mask, result = the_mask(resp)
    body = resp.get_json()
    assert mask.shape == (375, 500)
    assert 0 < mask.sum() < mask.size
    assert result["type"] == "brushlabels"
    assert result["from_name"] == "brush" and result["to_name"] == "image"
    assert result["value"]["brushlabels"] == ["Spatula"]
    # The version must say that these are random weights, in the response and per prediction.
    assert "RANDOM-WEIGHTS" in body["model_version"]
    assert body["results"][0]["model_version"] == body["model_version"]


def test_moving_the_click_changes_the_mask(backend):
    client, _ = backend
    first, _ = the_mask(client.post("/predict", json=predict_body([click(20.0, 30.0)])))
    second, _ = the_mask(client.post("/predict", json=predict_body([click(80.0, 70.0)])))
    assert (first != second).mean() > 0.01


def test_negative_click_changes_the_mask(backend):
    client, _ = backend
    one, _ = the_mask(client.post("/predict", json=predict_body([click(50.0, 50.0)])))
    # is_positive missing counts as positive; the second click is negative
    clicks = [click(50.0, 50.0, positive=None), click(52.0, 52.0, positive=False)]
    two, _ = the_mask(client.post("/predict", json=predict_body(clicks)))
    assert (one != two).any()


def test_second_click_does_not_run_the_encoder(backend):
    client, runtime = backend
    before = runtime.engine.encode_count
    the_mask(client.post("/predict", json=predict_body([click(10.0, 10.0)])))
    after_first = runtime.engine.encode_count
    the_mask(client.post("/predict", json=predict_body([click(60.0, 60.0)])))
    the_mask(client.post("/predict", json=predict_body([click(60.0, 60.0), click(20.0, 20.0)])))
    assert after_first - before <= 1
    assert runtime.engine.encode_count == after_first
    assert runtime.cache.hits >= 2


def test_predict_without_context_returns_nothing(backend):
    client, _ = backend
    resp = client.post("/predict", json=predict_body(None))
    assert resp.status_code == 200
    assert resp.get_json()["results"] == []


BAD_REQUESTS = {
    "malformed JSON": (b"{not json", 400, "JSON"),
    "tasks not a list": ({"tasks": "x", "params": {}}, 400, "tasks"),
    "click without value": (predict_body([{"type": "keypointlabels", "keypointlabels": ["Spatula"]}]), 400, "value"),
    "x outside the image": (predict_body([click(120.0, 50.0)]), 400, "x"),
    "negative y": (predict_body([click(20.0, -3.0)]), 400, "y"),
    "label with no brush": (predict_body([click(20.0, 20.0, label="Cornea")]), 400, "Cornea"),
    "only negative clicks": (predict_body([click(20.0, 20.0, positive=False)]), 400, "positive"),
    "missing image file": (predict_body([click(20.0, 20.0)], image="/data/local-files/?d=nope.png"), 4, "nope.png"),
    "corrupt image": (predict_body([click(20.0, 20.0)], image="/data/local-files/?d=corrupt.png"), 422, "image"),
    "empty image": (predict_body([click(20.0, 20.0)], image="/data/local-files/?d=empty.png"), 4, "empty"),
    "path escape": (predict_body([click(20.0, 20.0)], image="/data/local-files/?d=../../etc/passwd"), 403, ""),
    "task without image": ({**predict_body([click(20.0, 20.0)]), "tasks": [{"id": 1, "data": {}}]}, 400, "image"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_gets_4xx_with_message_and_server_keeps_serving(backend, name):
    client, _ = backend
    body, status, needle = BAD_REQUESTS[name]
    if isinstance(body, bytes):
        resp = client.post("/predict", data=body, content_type="application/json")
    else:
        resp = client.post("/predict", data=json.dumps(body), content_type="application/json")
    if status < 10:  # a class of statuses: 4 -> any 4xx
        assert resp.status_code // 100 == status, resp.data
    else:
        assert resp.status_code == status, resp.data
    detail = resp.get_json()["detail"]
    assert needle.lower() in detail.lower()
    # ... and the next good request still works
    mask, _ = the_mask(client.post("/predict", json=predict_body([click(40.0, 40.0)])))
    assert mask.any()


def test_webhook_without_action_is_400_and_start_training_is_accepted(backend):
    client, _ = backend
    assert client.post("/webhook", json={"project": {"id": 1}}).status_code == 400
    resp = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert resp.status_code == 201


def test_health_reports_version(backend):
    client, _ = backend
    body = client.get("/health").get_json()
    assert body["status"] == "UP"
    assert body["model_version"].startswith("sam2/sam2.1_hiera_t")


def test_images_come_from_the_host_and_token_that_setup_announced(backend, voc):
    """Label Studio's /setup carries its hostname and an access token; uploads need the token."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import cv2

    png = cv2.imencode(".png", cv2.cvtColor(voc["rgb"], cv2.COLOR_RGB2BGR))[1].tobytes()
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            seen.append((self.path, self.headers.get("Authorization")))
            ok = self.headers.get("Authorization") == "Token setup-token"
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(png if ok else b"no")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client, _ = backend
    host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        resp = client.post("/setup", json={"project": "1.1", "schema": CONFIG, "hostname": host,
                                           "access_token": "setup-token"})
        assert resp.status_code == 200
        mask, _ = the_mask(client.post("/predict", json=predict_body([click(30.0, 30.0)],
                                                                     image="/data/upload/1/abc-voc.png")))
        assert mask.any()
        assert seen and seen[0] == ("/data/upload/1/abc-voc.png", "Token setup-token")
    finally:
        server.shutdown()


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


@pytest.fixture
def keep_alive_server(backend):
    """The module's app (from create_app) behind werkzeug's threaded server with HTTP/1.1 keep-alive."""
    import threading

    from werkzeug.serving import make_server

    from rpsam2_backend.web.dev_server import KeepAliveRequestHandler

    client, _ = backend
    server = make_server("127.0.0.1", 0, client.application, threaded=True, request_handler=KeepAliveRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def test_keep_alive_server_answers_several_requests_on_one_connection(keep_alive_server):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", keep_alive_server, timeout=120)
    try:
        conn.request("POST", "/predict", body=b"{not json", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 400 and "JSON" in body["detail"]
        assert resp.version == 11 and not resp.will_close
        sock = conn.sock
        assert sock is not None  # http.client drops the socket when the server closes the connection

        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "UP"
        assert resp.version == 11 and not resp.will_close
        assert conn.sock is sock  # the same TCP connection, not a new one

        body = json.dumps(predict_body([click(30.0, 40.0)])).encode()
        conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.version == 11
        result = json.loads(resp.read())["results"][0]["result"][0]
        assert rle_to_mask(result["value"]["rle"], 375, 500).any()
        assert conn.sock is sock
    finally:
        conn.close()


def test_keep_alive_server_closes_a_connection_whose_body_was_left_unread():
    """werkzeug 2.0 keeps no track of an unread body: a reused connection would parse its bytes
    as the next request (HTTP 400).  The handler closes such a connection and says so; a body the
    application read keeps the connection open."""
    import http.client
    import threading

    from flask import Flask
    from flask import request as flask_request
    from werkzeug.serving import make_server

    from rpsam2_backend.web.dev_server import KeepAliveRequestHandler

    app = Flask("keep-alive-probe")
    app.add_url_rule("/refuse", "refuse", lambda: ("no", 401), methods=["POST"])  # body never read
    app.add_url_rule("/echo", "echo", lambda: flask_request.get_data(), methods=["POST"])
    app.add_url_rule("/ping", "ping", lambda: "pong")
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=KeepAliveRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    try:
        conn.request("POST", "/echo", body=b"abc" * 1000)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"abc" * 1000) and not resp.will_close
        sock = conn.sock

        conn.request("POST", "/refuse", body=b"GET /ping HTTP/1.1\r\n\r\n" * 50)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (401, b"no")
        assert resp.getheader("Connection") == "close" and resp.will_close

        conn.request("GET", "/ping")  # http.client opens a new connection, as told
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"pong")
        assert conn.sock is not sock
    finally:
        conn.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
