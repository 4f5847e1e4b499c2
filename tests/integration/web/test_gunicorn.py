"""The production web tier: gunicorn with deploy/gunicorn.conf.py serving the app factory (inline
mode, random-weight hiera_t), hit with real HTTP: keep-alive, hostile requests, the access log,
graceful shutdown, and a start that fails with the message that names the fix."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
import requests

from rpsam2_backend.labelstudio.brush import rle_to_mask
from tests.conftest import save_png
from tests.support.image_server import Route, Server, serve
from tests.support.paths import REPO_ROOT
from tests.support.rpsam2_stack import VENV_BIN, Proc, backend_env, backend_health, free_port, start_gunicorn, wait_for

pytestmark = pytest.mark.slow

CONFIG = (REPO_ROOT / "deploy" / "label_config.xml").read_text()
BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><View><Text name="t" value="&lol2;"/></View>'
)


def _click(x: float = 50.0, y: float = 50.0) -> dict:
    return {
        "type": "keypointlabels", "from_name": "click", "to_name": "image", "original_width": 500,
        "original_height": 375, "value": {"x": x, "y": y, "width": 1, "keypointlabels": ["Spatula"]},
    }


def _predict_body(image: str, clicks: list[dict]) -> dict:
    return {"tasks": [{"id": 1, "data": {"image": image}}], "label_config": CONFIG,
            "params": {"context": {"result": clicks}}}


@pytest.fixture(scope="module")
def slow_images(voc) -> Iterator[Server]:
    """An image host whose body arrives 3 s late: a click on it is in flight for that long."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(voc["rgb"], cv2.COLOR_RGB2BGR))
    assert ok
    httpd, state = serve(Server(""))
    state.routes["/slow.png"] = Route(body=png.tobytes(), delay_body=3.0)
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, voc, slow_images) -> Iterator[tuple[Proc, str]]:
    tmp = tmp_path_factory.mktemp("gunicorn")
    save_png(tmp / "files" / "voc.png", voc["rgb"])
    env = backend_env(
        MODEL_DIR=str(tmp / "models"), LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(tmp / "files"),
        RPSAM2_ALLOWED_IMAGE_HOSTS="127.0.0.1", RPSAM2_MAX_REQUEST_MB="2", WEB_CONCURRENCY="1",
        RPSAM2_WEB_THREADS="4", RPSAM2_GRACEFUL_TIMEOUT="60",
    )
    proc, url = start_gunicorn(tmp, env, free_port())
    try:
        wait_for(lambda: backend_health(url), 300, proc, "gunicorn did not answer /health")
        assert requests.post(f"{url}/setup", json={"project": "1.1", "schema": CONFIG}, timeout=30).ok
        yield proc, url
    finally:
        proc.stop()


def _assert_clean_error(resp: requests.Response | http.client.HTTPResponse, status: int, body: bytes) -> dict:
    assert resp.status == status if isinstance(resp, http.client.HTTPResponse) else resp.status_code == status
    text = body.decode(errors="replace")
    assert "Traceback" not in text and ".py" not in text, text
    payload = json.loads(text)
    assert payload["status"] == status and payload["detail"] and payload["request_id"]
    return payload


def test_one_keep_alive_connection_serves_setup_clicks_and_health(server) -> None:
    _, url = server
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=120)
    try:
        sockets = set()
        for _ in range(2):
            conn.request("POST", "/predict", body=json.dumps(_predict_body("/data/local-files/?d=voc.png", [_click()])),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body[:500]
            assert resp.getheader("Connection", "").lower() != "close"
            result = json.loads(body)["results"][0]["result"][0]
            assert rle_to_mask(result["value"]["rle"], 375, 500).any()
            sockets.add(id(conn.sock))
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "UP"
        sockets.add(id(conn.sock))
        assert len(sockets) == 1  # the same TCP connection throughout
    finally:
        conn.close()


def test_a_body_left_unread_does_not_desynchronise_the_connection(server) -> None:
    """405 is answered before the body is read; the next request on the connection still parses
    (the old development server started the next request inside the unread body)."""
    _, url = server
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=60)
    try:
        body = json.dumps({"tasks": [], "pad": "GET /health HTTP/1.1\r\n\r\n" * 4000}).encode()
        conn.request("POST", "/health", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        _assert_clean_error(resp, 405, resp.read())
        if resp.will_close:  # closing instead of draining is as safe
            conn.close()
        conn.request("GET", "/metrics")
        again = conn.getresponse()
        assert again.status == 200 and b"rpsam2_click_seconds" in again.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/setup", {"project": "1.1", "schema": "<View><Image"}, 400, "not valid XML"),
        ("/setup", {"project": "1.1", "schema": BOMB}, 400, "DOCTYPE"),
        ("/setup", {"project": "1.1", "schema": 42}, 400, "'schema' must be"),
        ("/predict", {"tasks": [], "label_config": BOMB, "params": {"context": {"result": [_click()]}}}, 400,
         "DOCTYPE"),
        ("/predict", _predict_body("/data/local-files/?d=voc.png", [_click()] * 5000), 400, "RPSAM2_MAX_CLICKS"),
        ("/predict", {"tasks": "all", "label_config": CONFIG}, 400, "'tasks' must be a list"),
        ("/webhook", {"action": 7}, 400, "'action'"),
        ("/predict", _predict_body("http://169.254.169.254/latest/meta-data/x.png", [_click()]), 403,
         "RPSAM2_ALLOWED_IMAGE_HOSTS"),
    ],
    ids=["bad xml", "entity bomb", "number schema", "bomb in predict", "5000 clicks", "tasks not a list",
         "webhook action not text", "metadata host"],
)
def test_hostile_requests_get_4xx_with_a_message_and_the_server_keeps_serving(server, path, body, status, says):
    _, url = server
    resp = requests.post(url + path, json=body, timeout=60)
    payload = _assert_clean_error(resp, status, resp.content)
    assert says in payload["detail"]
    assert resp.headers["X-Request-Id"] == payload["request_id"]
    assert requests.get(f"{url}/health", timeout=10).json()["status"] == "UP"


def test_oversize_and_malformed_bodies(server) -> None:
    _, url = server
    resp = requests.post(f"{url}/predict", data=b"x" * (3 << 20), headers={"Content-Type": "application/json"},
                         timeout=60)
    _assert_clean_error(resp, 413, resp.content)
    # Chunked (no Content-Length): cut at the limit by werkzeug, so the app itself must refuse it.
    resp = requests.post(f"{url}/predict", data=iter([b"[" * 1_600_000, b"]" * 1_600_000]),
                         headers={"Content-Type": "application/json"}, timeout=60)
    _assert_clean_error(resp, 413, resp.content)
    for raw in (b"{oops", b"[NaN]", b"[" * 50_000 + b"]" * 50_000, b"null", b"\xff\xfe"):
        resp = requests.post(f"{url}/predict", data=raw, headers={"Content-Type": "application/json"}, timeout=60)
        assert resp.status_code == 400, (raw[:20], resp.text[:300])
        _assert_clean_error(resp, 400, resp.content)
    resp = requests.get(f"{url}/no-such-route", timeout=10)
    _assert_clean_error(resp, 404, resp.content)
    resp = requests.get(f"{url}/predict", timeout=10)
    _assert_clean_error(resp, 405, resp.content)
    assert "POST" in resp.headers["Allow"]


def test_access_log_has_paths_and_request_ids_but_no_query_strings(server) -> None:
    proc, url = server
    resp = requests.get(f"{url}/health?access_token=SECRET-123", headers={"X-Request-Id": "probe-42"}, timeout=10)
    assert resp.status_code == 200 and resp.headers["X-Request-Id"] == "probe-42"
    forged = requests.get(f"{url}/health", headers={"X-Request-Id": "x y\" FAKE=1"}, timeout=10)
    assert forged.headers["X-Request-Id"] != 'x y" FAKE=1' and len(forged.headers["X-Request-Id"]) == 32

    def logged() -> bool:
        return "rid=probe-42" in proc.read_log()

    wait_for(logged, 10, proc, "the access log line")
    line = next(line for line in proc.read_log().splitlines() if "rid=probe-42" in line)
    assert '"GET /health HTTP/1.1" 200' in line
    assert "SECRET-123" not in proc.read_log()


def test_start_without_checkpoint_stops_with_the_fix(tmp_path: Path) -> None:
    env = backend_env(RPSAM2_ALLOW_RANDOM_WEIGHTS="0", RPSAM2_CHECKPOINT_DIR=str(tmp_path),
                      RPSAM2_SAM2_CONFIG="configs/sam2.1/sam2.1_hiera_l.yaml", MODEL_DIR=str(tmp_path / "m"),
                      PORT=str(free_port()), HOST="127.0.0.1")
    proc = subprocess.run([str(VENV_BIN / "gunicorn"), "-c", str(REPO_ROOT / "deploy" / "gunicorn.conf.py")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "cannot start" in out and "sam2.1_hiera_large.pt" in out and "make checkpoints" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]


def test_the_web_process_of_the_rq_deployment_imports_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from rpsam2_backend.core.settings import Settings\n"
        "from rpsam2_backend.web.app import create_app\n"
        "app = create_app(Settings.from_env({'REDIS_URL': 'redis://127.0.0.1:1/0', 'MODEL_DIR': sys.argv[1]}))\n"
        "assert app.test_client().get('/health').status_code == 200\n"
        "print('torch' in sys.modules, 'sam2' in sys.modules)\n"
    )
    out = subprocess.run([str(VENV_BIN / "python"), "-c", code, str(tmp_path)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120, env=backend_env())
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


def test_sigterm_lets_the_click_in_flight_finish(server, slow_images) -> None:
    """Runs last in this module: it stops the server."""
    proc, url = server
    slow_images.seen.clear()
    answer: dict = {}

    def click() -> None:
        resp = requests.post(f"{url}/predict", json=_predict_body(slow_images.url + "/slow.png", [_click()]),
                             timeout=120)
        answer["status"], answer["body"] = resp.status_code, resp.json()

    thread = threading.Thread(target=click)
    thread.start()
    wait_for(lambda: slow_images.seen, 60, proc, "the click to reach the image host")  # now it is in flight
    proc.process.send_signal(signal.SIGTERM)
    thread.join(120)
    assert answer.get("status") == 200, answer
    assert answer["body"]["results"][0]["result"][0]["value"]["rle"]
    assert proc.process.wait(timeout=90) == 0  # then gunicorn stops cleanly
    assert "Shutting down" in proc.read_log() or "Handling signal: term" in proc.read_log()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=5)
