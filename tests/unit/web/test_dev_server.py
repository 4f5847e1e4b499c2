"""HTTP/1.1 keep-alive of the development server (``web.dev_server``) in front of the real app."""

from __future__ import annotations

import json

import pytest

from rpsam2_backend.labelstudio.brush import rle_to_mask
from tests.support.backend_app import click, predict_body


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
