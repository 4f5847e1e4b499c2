"""The Flask app: label-studio-ml 1.0.9's routes, with the gaps we need closed.

label-studio-ml answers every exception with HTTP 500, drops our model_version, ignores
START_TRAINING and forks a process per webhook.  Rather than fork the library we swap in a
manager subclass and add request hooks:
- malformed JSON and bad payloads -> 400 with a message (BackendError keeps its status);
- the model's own version reaches Label Studio (/setup and /predict);
- webhooks run the model's ``fit`` in the request (it only counts and enqueues);
- optional HTTP basic auth; /health and /metrics of our own.
"""

from __future__ import annotations

import base64
import hmac
import logging

from flask import Flask, Response, jsonify, request
from label_studio_ml import api as lsml_api
from label_studio_ml.exceptions import AnswerException
from label_studio_ml.model import LabelStudioMLManager

from rpsam2_backend.core.errors import BackendError, BadRequest
from rpsam2_backend.core.names import SEGMENT_JOB
from rpsam2_backend.core.propagation_status import read_propagation_status
from rpsam2_backend.core.retrain_status import read_status
from rpsam2_backend.core.settings import Settings, get_settings
from rpsam2_backend.labelstudio.rle_json import LabelStudioJSONEncoder
from rpsam2_backend.web.model import RPSAM2Model
from rpsam2_backend.web.prometheus import BackendMetrics, MeteredDispatcher
from rpsam2_backend.web.state import WebState, get_web_state, set_web_state

log = logging.getLogger(__name__)


def _error(status: int, message: str):
    return jsonify({"status": status, "detail": message}), status


class RPSAM2Manager(LabelStudioMLManager):
    @classmethod
    def _model(cls, label_config: str | None) -> RPSAM2Model:
        current = cls._current_model
        if current and (not label_config or current.model.label_config == label_config):
            return current.model
        # One backend may serve several projects: a request carrying another label config gets
        # its own (cheap) model object instead of the last /setup's.
        return cls.model_class(label_config=label_config, **cls.init_kwargs)

    @classmethod
    def fetch(cls, project=None, label_config=None, force_reload=False, **kwargs):
        wrapper = super().fetch(project, label_config, force_reload, **kwargs)
        wrapper.model_version = wrapper.model.model_version
        get_web_state().saw_setup(kwargs.get("hostname"), kwargs.get("access_token"))
        return wrapper

    @classmethod
    def predict(cls, tasks, project=None, label_config=None, force_reload=False, try_fetch=True, **kwargs):
        if not isinstance(tasks, list):
            raise AnswerException(400, "'tasks' must be a list of Label Studio tasks", {})
        if not cls._current_model:
            cls.fetch(project, label_config)
        model = cls._model(label_config)
        try:
            predictions = model.predict(tasks, **kwargs)
        except BackendError as exc:
            log.warning("predict refused (%s): %s", exc.status, exc.message)
            raise AnswerException(exc.status, exc.message, {}) from None
        cls._current_model.model_version = model.model_version
        return predictions, cls._current_model

    @classmethod
    def webhook(cls, event, data):
        if not cls._current_model:
            cls.fetch(None, (data.get("project") or {}).get("label_config"))
        try:
            return cls._current_model.model.process_event(event, data, None, {}) or {}
        except BackendError as exc:
            return {"error": exc.message, "status": exc.status}


def _check_basic_auth(settings: Settings):
    web = settings.web
    if not web.basic_auth_user or request.endpoint == "health":
        return None
    header = request.headers.get("Authorization", "")
    expected = base64.b64encode(f"{web.basic_auth_user}:{web.basic_auth_pass}".encode()).decode()
    if header.startswith("Basic ") and hmac.compare_digest(header[6:].strip(), expected):
        return None
    resp = jsonify({"status": 401, "detail": "basic auth required (BASIC_AUTH_USER / BASIC_AUTH_PASS)"})
    return resp, 401, {"WWW-Authenticate": 'Basic realm="rpsam2"'}


def _check_json():
    if request.method != "POST":
        return None
    data = request.get_json(silent=True, force=True)
    if not isinstance(data, dict):
        return _error(400, "request body must be a JSON object")
    if request.endpoint == "webhook" and not data.get("action"):
        return _error(400, "webhook body has no 'action'")
    if request.endpoint == "_predict":
        if not isinstance(data.get("tasks"), list):
            return _error(400, "'tasks' must be a list of Label Studio tasks")
        params = data.get("params")
        if params is not None and not isinstance(params, dict):
            return _error(400, "'params' must be an object")
    return None


def create_app(settings: Settings, warm: bool = True, state: WebState | None = None) -> Flask:
    """Build the app. ``warm`` loads SAM2 now in inline mode, so a bad setting fails at start."""
    state = state or WebState(settings)
    if warm:
        state.dispatcher.warm()
    set_web_state(state)

    lsml_api._manager = RPSAM2Manager()
    app = lsml_api.init_app(model_class=RPSAM2Model, model_dir=settings.model.model_dir)
    app.json_encoder = LabelStudioJSONEncoder  # brush RLE arrives as bytes (see labelstudio/rle_json.py)
    app.before_request_funcs.setdefault(None, [])
    # Auth before JSON checks; both before label-studio-ml's own handlers.
    app.before_request_funcs[None][:0] = [lambda: _check_basic_auth(settings), _check_json]

    if not isinstance(state.dispatcher, MeteredDispatcher):
        metered = MeteredDispatcher(state.dispatcher, BackendMetrics(state.dispatcher.health), SEGMENT_JOB)
        state.dispatcher = metered
    metrics = state.dispatcher.metrics

    def health():
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

    def prometheus_metrics():
        body, content_type = metrics.render()
        return Response(body, mimetype=content_type.split(";")[0], content_type=content_type)

    app.view_functions["health"] = health
    app.view_functions["metrics"] = prometheus_metrics

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest):
        return _error(exc.status, exc.message)

    return app


def create_app_from_env() -> Flask:
    return create_app(get_settings())
