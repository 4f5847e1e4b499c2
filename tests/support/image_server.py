"""A tiny image host on a loopback address, recording every request it gets (image loading tests)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    needs_token: bool = False
    delay_headers: float = 0.0
    delay_body: float = 0.0
    length: bool = True  # send Content-Length (False: body ends when the connection closes)
    location: str = ""


@dataclass
class Server:
    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization)
    token: str = ""  # what routes with needs_token expect


def serve(server_state: Server, host: str = "127.0.0.1") -> tuple[ThreadingHTTPServer, Server]:
    """Serve ``server_state.routes`` on ``host`` (any loopback address) in a thread; records requests."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            server_state.seen.append((self.path, self.headers.get("Authorization")))
            route = server_state.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            time.sleep(route.delay_headers)
            if route.needs_token and self.headers.get("Authorization") != f"Token {server_state.token}":
                self.send_error(401)
                return
            self.send_response(route.status)
            if route.location:
                self.send_header("Location", route.location)
            if route.length:
                self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            if route.delay_body:
                self.wfile.write(route.body[:10])
                self.wfile.flush()
                time.sleep(route.delay_body)
                self.wfile.write(route.body[10:])
            else:
                self.wfile.write(route.body)

        def log_message(self, *args: object) -> None:
            pass

    class QuietServer(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # clients that give up early (size limit, timeout) are what several tests do

    httpd = QuietServer((host, 0), Handler)
    httpd.daemon_threads = True
    server_state.url = f"http://{host}:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, server_state
