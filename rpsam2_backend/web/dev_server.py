"""HTTP/1.1 keep-alive for werkzeug's threaded development server (``label-studio-ml start``)."""

from __future__ import annotations

from werkzeug.serving import WSGIRequestHandler


class _CountedBody:
    """A request body that counts what the application read of it."""

    def __init__(self, stream, length: int) -> None:
        self.stream = stream
        self.left = length

    def _take(self, size: int | None) -> int:
        return self.left if size is None or size < 0 else min(size, self.left)

    def read(self, size: int | None = -1) -> bytes:
        data = self.stream.read(self._take(size)) if self.left > 0 else b""
        self.left -= len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = self.stream.readline(self._take(size)) if self.left > 0 else b""
        self.left -= len(data)
        return data


class KeepAliveRequestHandler(WSGIRequestHandler):
    """HTTP/1.1 for the threaded development server (werkzeug 2.0 answers HTTP/1.0 and closes
    every connection): a client that keeps its connection open saves a TCP setup and a thread
    start per click.  Flask sets Content-Length on every response this app sends.

    werkzeug 2.0 does not skip a body the application left unread (a 401 or 405 answered before
    reading it): the next request on the connection would start inside that body.  Such a
    connection is closed after the response instead."""

    protocol_version = "HTTP/1.1"

    def make_environ(self):
        environ = super().make_environ()
        self._body: _CountedBody | None = None
        self._unknown_body = "wsgi.input_terminated" in environ  # chunked: no length to count
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            self._unknown_body = True
            length = 0
        if length > 0 and not self._unknown_body:
            self._body = _CountedBody(environ["wsgi.input"], length)
            environ["wsgi.input"] = self._body
        return environ

    def _unread_body(self) -> bool:
        body = getattr(self, "_body", None)
        return getattr(self, "_unknown_body", False) or (body is not None and body.left > 0)

    def end_headers(self) -> None:
        # Headers go out once the application has answered: tell the client now.
        if self._unread_body() and not self.close_connection:
            self.send_header("Connection", "close")
            self.close_connection = True
        super().end_headers()

    def run_wsgi(self) -> None:
        super().run_wsgi()
        if self._unread_body():  # read nothing more from this connection
            self.close_connection = True
