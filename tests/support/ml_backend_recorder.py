"""A stand-in ML backend on loopback that records every request Label Studio makes to it.

Test-only: it documents and guards the wire protocol (see tests/support/labelstudio_server.py);
it is not the product backend.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PredictHandler = Callable[[dict], dict]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None for an empty body


@dataclass
class RecorderReplies:
    health: dict = field(default_factory=lambda: {"status": "UP", "model_class": "Recorder"})
    setup: dict = field(default_factory=lambda: {"model_version": "recorder-v1"})
    # Called with the /predict body; default answers every task with an empty result.
    predict: PredictHandler | None = None
    webhook: dict = field(default_factory=lambda: {"status": "ok"})


class MLBackendRecorder:
    def __init__(self, replies: RecorderReplies | None = None) -> None:
        self.replies = replies or RecorderReplies()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="ml-recorder", daemon=True)

    def start(self) -> MLBackendRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MLBackendRecorder:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_for(
        self,
        path: str,
        predicate: Callable[[RecordedRequest], bool] = lambda _: True,
        timeout_s: float = 30.0,
    ) -> RecordedRequest:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for request in self._requests:
                    if request.path == path and predicate(request):
                        return request
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(r.method, r.path) for r in self._requests]
                    raise AssertionError(f"no matching {path} request within {timeout_s} s; saw {seen}")
                self._changed.wait(remaining)

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _reply_for(self, path: str, body: Any) -> tuple[int, dict]:
        if path == "/health":
            return 200, self.replies.health
        if path == "/setup":
            return 200, self.replies.setup
        if path == "/predict":
            if self.replies.predict is not None:
                return 200, self.replies.predict(body)
            tasks = (body or {}).get("tasks", [])
            return 200, {"results": [{"result": [], "score": 0.0} for _ in tasks]}
        if path == "/webhook":
            return 200, self.replies.webhook
        return 404, {"error": f"recorder has no {path}"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                path = self.path.split("?", 1)[0]
                recorder._record(RecordedRequest(self.command, path, dict(self.headers.items()), body))
                try:
                    status, reply = recorder._reply_for(path, body)
                except Exception as exc:  # a broken test handler must show up as an HTTP 500, not a hang
                    status, reply = 500, {"error": repr(exc)}
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _handle
            do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

        return Handler
