"""Every error leaves as JSON with a message and a request id, never with a traceback.

The traceback of an unexpected error goes to the server log under the same request id, which
the answer names, so an operator can find it.  A client may send its own ``X-Request-Id`` (a
proxy's); anything that is not a short token is replaced, so it cannot forge log lines.
"""

from __future__ import annotations

import logging
import re
import uuid

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from rpsam2_backend.core.errors import BackendError

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id() -> str:
    return g.get("request_id", "-")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    resp = jsonify({"status": status, "detail": message, "request_id": request_id()})
    resp.status_code = status
    resp.headers.update(headers or {})
    return resp


def install_error_handling(app: Flask) -> None:
    @app.before_request
    def _assign_request_id() -> None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

    @app.after_request
    def _echo_request_id(resp: Response) -> Response:
        resp.headers[REQUEST_ID_HEADER] = request_id()
        return resp

    @app.errorhandler(BackendError)
    def _backend_error(exc: BackendError) -> Response:
        log.warning("request %s %s %s -> %d: %s", request_id(), request.method, request.path, exc.status, exc.message)
        return error_response(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        # Keep the headers werkzeug sets (Allow on 405, WWW-Authenticate ...).
        headers = {k: v for k, v in exc.get_response().headers.items() if k.lower() not in ("content-type",
                                                                                            "content-length")}
        return error_response(exc.code or 500, exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("request %s %s %s failed", request_id(), request.method, request.path, exc_info=exc)
        return error_response(500, f"internal error; the server log has the details under request id {request_id()}")
