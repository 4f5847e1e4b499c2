"""The Flask app: Label Studio's ML-backend protocol, with hardened edges.

The routes and JSON shapes are label-studio-ml 1.0.9's (``/setup``, ``/predict``, ``/webhook``,
``/health``, ``/metrics``, ``/versions``, ``/is_training``); the app is our own, because that
package's app is a module-level singleton whose error decorator answers every error with HTTP 500
and the server's traceback, and whose hooks log every request body.  Here:
- bodies over RPSAM2_MAX_REQUEST_MB get 413 (also when chunked), malformed JSON and wrong types
  400 with a message, more than RPSAM2_MAX_CLICKS context items 400;
- every error is JSON with a request id; tracebacks stay in the server log (``web.errors``);
- webhooks only count and enqueue (``web.learning_hook``); optional HTTP basic auth;
- /health and /metrics (Prometheus) are ours.
``create_app`` builds a fresh app each call (gunicorn's factory, tests).
"""

from __future__ import annotations

import base64
import hmac
import logging
import sys
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import BadRequest as HTTPBadRequest

from rpsam2_backend.core.errors import BadRequest, ConfigError
from rpsam2_backend.core.names import SEGMENT_JOB
from rpsam2_backend.core.propagation_status import read_propagation_status
from rpsam2_backend.core.retrain_status import read_status
from rpsam2_backend.core.settings import Settings, get_settings
from rpsam2_backend.web.errors import error_response, install_error_handling
from rpsam2_backend.web.json_provider import LabelStudioJSONProvider
from rpsam2_backend.web.prometheus import BackendMetrics, MeteredDispatcher
from rpsam2_backend.web.registry import ModelRegistry
from rpsam2_backend.web.state import WebState, set_web_state

log = logging.getLogger(__name__)

OPEN_ENDPOINTS = {"health", "index"}  # answer without basic auth (load balancers, Label Studio's check)


def _json_object() -> dict[str, Any]:
    """The request body as a JSON object; 413 over MAX_CONTENT_LENGTH, 400 otherwise wrong."""
    data = request.get_data(cache=True)  # a Content-Length over the limit raises 413 here
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(data) >= limit:
        # A chunked body is cut at the limit without an error: reading past it raises the 413.
        request.stream.read(1)
    try:
        body = request.get_json(force=True, silent=False)
    except HTTPBadRequest as exc:  # JSON that does not parse (our provider refuses NaN and deep nesting)
        raise BadRequest(f"request body is not valid JSON: {exc.description}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def _field(body: dict[str, Any], name: str, kind: type, what: str, default: Any = None) -> Any:
    """``body[name]`` when it is None or of ``kind``; BadRequest naming the field otherwise."""
    value = body.get(name, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise BadRequest(f"'{name}' must be {what}, got {type(value).__name__}")
    return value


def _check_basic_auth(settings: Settings) -> Response | None:
    web = settings.web
    if not web.basic_auth_user or request.endpoint in OPEN_ENDPOINTS:
        return None
    header = request.headers.get("Authorization", "")
    expected = base64.b64encode(f"{web.basic_auth_user}:{web.basic_auth_pass}".encode()).decode()
    if header.startswith("Basic ") and hmac.compare_digest(header[6:].strip(), expected):
        return None
    return error_response(401, "basic auth required (BASIC_AUTH_USER / BASIC_AUTH_PASS)",
                          {"WWW-Authenticate": 'Basic realm="rpsam2"'})


def create_app(settings: Settings, warm: bool = True, state: WebState | None = None) -> Flask:
    """Build the app. ``warm`` loads SAM2 now in inline mode, so a bad setting fails at start."""
    state = state or WebState(settings)
    if warm:
        state.dispatcher.warm()
    if not isinstance(state.dispatcher, MeteredDispatcher):
        state.dispatcher = MeteredDispatcher(state.dispatcher, BackendMetrics(state.dispatcher.health), SEGMENT_JOB)
    metrics = state.dispatcher.metrics
    set_web_state(state)
    registry = ModelRegistry(state)

    app = Flask("rpsam2_backend")
    app.json = LabelStudioJSONProvider(app)  # brush RLE arrives as bytes (labelstudio/rle_json.py)
    app.config["MAX_CONTENT_LENGTH"] = int(settings.web.max_request_mb * 1024 * 1024)
    install_error_handling(app)
    # Read every body (bounded by MAX_CONTENT_LENGTH) before any answer, errors included: a body
    # left unread makes the server drop a kept-alive connection, and the client's next click on
    # it fails.
    app.before_request(lambda: (request.get_data(cache=True), None)[1])
    app.before_request(lambda: _check_basic_auth(settings))

    @app.after_request
    def _server_timing(resp: Response) -> Response:
        timing = g.pop("server_timing", None)
        if timing:  # milliseconds, standard header: shows in browser devtools and benchmarks pair on it
            resp.headers["Server-Timing"] = ", ".join(
                f"{name};dur={value * 1e3:.2f}" for name, value in timing.items() if value is not None
            )
        return resp

    @app.post("/setup")
    def setup() -> Response:
        body = _json_object()
        schema = _field(body, "schema", str, "the label config (XML text)")
        hostname = _field(body, "hostname", str, "a URL", "") or ""
        token = _field(body, "access_token", str, "a token", "") or ""
        return jsonify({"model_version": registry.setup(schema, hostname, token)})

    @app.post("/predict")
    def predict() -> Response:
        body = _json_object()
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("'tasks' must be a list of Label Studio tasks")
        params = _field(body, "params", dict, "an object") or {}
        label_config = _field(body, "label_config", str, "the label config (XML text)")
        context = params.get("context")
        result = context.get("result") if isinstance(context, dict) else None
        limit = settings.web.max_clicks
        if isinstance(result, list) and len(result) > limit:
            raise BadRequest(f"the context holds {len(result)} items, more than RPSAM2_MAX_CLICKS={limit}")
        predictions, version = registry.predict(tasks, label_config, params)
        return jsonify({"results": predictions, "model_version": version})

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        body = _json_object()
        action = body.pop("action", None)
        if not isinstance(action, str) or not action:
            raise BadRequest("webhook body needs an 'action' (the Label Studio event name)")
        return jsonify(registry.webhook(action, body)), 201

    @app.get("/health")
    def health() -> Response:
        # Always 200 while this process serves: Label Studio only needs an answer, and a Redis
        # outage shows here ("redis": "down") instead of making the backend look gone.
        dispatch = state.dispatcher.health()
        return jsonify(
            {
                "status": "UP",
                "model_version": state.model_version,
                "model_dir": settings.model.model_dir,
                "redis": dispatch.get("redis", "unused"),
                "live_workers": {name: q["workers"] for name, q in (dispatch.get("queues") or {}).items()},
                "model_versions": dispatch.get("model_versions", []),
                "dispatch": dispatch,
                "last_retrain": read_status(settings.model.model_dir),
                "last_propagation": read_propagation_status(settings.model.model_dir),  # per project
            }
        )

    app.add_url_rule("/", "index", health)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    @app.post("/versions")
    def versions() -> Response:
        # Label Studio lists these under the model's versions; the backend serves one at a time.
        return jsonify({"versions": [state.model_version], "model_dir": settings.model.model_dir, "v2": True})

    @app.get("/is_training")
    def is_training() -> Response:
        status = read_status(settings.model.model_dir) or {}
        return jsonify({"is_training": status.get("status") == "running", "model_version": state.model_version,
                        "backend": "rq" if not settings.inline else "inline"})

    @app.post("/train")
    def train() -> Response:
        return error_response(410, "POST /train is gone since Label Studio 1.4.1: training starts from webhooks "
                                   "(the project's webhook to this backend's /webhook, or Start Training)")

    return app


def create_app_from_env() -> Flask:
    """gunicorn's factory (deploy/gunicorn.conf.py).  A setting that stops the start (no SAM2
    checkpoint, a malformed value) is logged as one line that names it, and the exit code 3
    makes gunicorn's master stop instead of restarting the worker forever."""
    try:
        return create_app(get_settings())
    except ConfigError as exc:
        log.error("rpsam2-backend: cannot start: %s", exc.message)
        print(f"rpsam2-backend: cannot start: {exc.message}", file=sys.stderr, flush=True)
        sys.exit(3)
