"""A click becomes a mask: /setup, /predict and every bad input, through the real Flask app
(label-studio-ml 1.0.9 routes) with real sam2 code (random-weight hiera_t)."""

from __future__ import annotations

import json

import pytest

from tests.support.backend_app import CONFIG, click, predict_body, rect, the_mask


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
    "box without area": (predict_body([rect(20.0, 20.0, 0.0, 10.0)]), 400, "no area"),
    "box and click of two labels": (predict_body([click(20.0, 20.0, label="Gauge"), rect(20.0, 20.0, 9.0, 9.0)]), 400,
                                    "same label"),
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


def test_an_unexpected_error_answers_500_with_a_request_id_and_logs_the_traceback(backend, monkeypatch, caplog):
    from rpsam2_backend.web.model import RPSAM2Model

    client, _ = backend

    def explode(self, tasks, **kwargs):
        raise RuntimeError("secret detail in /opt/app/secret_module.py")

    monkeypatch.setattr(RPSAM2Model, "predict", explode)
    with caplog.at_level("ERROR", logger="rpsam2_backend.web.errors"):
        resp = client.post("/predict", json=predict_body([click(30.0, 30.0)]), headers={"X-Request-Id": "req-77"})
    assert resp.status_code == 500
    body = resp.get_json()
    assert body == {"status": 500, "request_id": "req-77",
                    "detail": "internal error; the server log has the details under request id req-77"}
    assert b"secret" not in resp.data and b"Traceback" not in resp.data
    record = next(r for r in caplog.records if "req-77" in r.getMessage())
    assert record.exc_info and "secret detail" in str(record.exc_info[1])  # the operator has it all


def test_errors_are_json_for_routing_and_basic_auth(backend, random_settings, sam2_engine):
    from rpsam2_backend.jobs.runtime import Runtime, set_runtime
    from rpsam2_backend.web.app import create_app

    client, _ = backend
    assert client.get("/nope").get_json()["status"] == 404
    resp = client.get("/predict")
    assert resp.status_code == 405 and resp.get_json()["status"] == 405 and "POST" in resp.headers["Allow"]
    assert client.post("/train", json={}).status_code == 410

    guarded = random_settings.with_("web", basic_auth_user="ann", basic_auth_pass="pw")
    set_runtime(Runtime(guarded, engine=sam2_engine))
    try:
        locked = create_app(guarded, warm=False).test_client()
        denied = locked.post("/setup", json={"schema": CONFIG})
        assert denied.status_code == 401 and denied.headers["WWW-Authenticate"].startswith("Basic")
        assert "BASIC_AUTH_USER" in denied.get_json()["detail"] and denied.get_json()["request_id"]
        assert locked.get("/health").status_code == 200  # health checks need no credentials
        assert locked.post("/setup", json={"schema": CONFIG}, auth=("ann", "pw")).status_code == 200
    finally:
        set_runtime(backend[1])


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"project": "1.1", "schema": 42}, "'schema' must be"),
        ({"project": "1.1", "schema": CONFIG, "hostname": ["x"]}, "'hostname' must be"),
        ({"project": "1.1", "schema": "<View"}, "not valid XML"),
        ({"project": "1.1", "schema": '<!DOCTYPE v [<!ENTITY e "x">]><View>&e;</View>'}, "DOCTYPE"),
        ([1, 2], "JSON object"),
    ],
)
def test_setup_refuses_wrong_types_and_hostile_configs(backend, body, says):
    client, _ = backend
    resp = client.post("/setup", json=body)
    assert resp.status_code == 400 and says in resp.get_json()["detail"], resp.get_json()
    assert client.post("/setup", json={"project": "1.1", "schema": CONFIG}).status_code == 200
