"""Container health checks (stdlib + the redis client only; no torch): exit 0 healthy, 1 not.

  python deploy/healthcheck.py http URL     GET URL answers 2xx (backend /health, Label Studio)
  python deploy/healthcheck.py worker       an rpsam2-worker on this host publishes its presence
                                            in Redis (REDIS_URL), i.e. SAM2 is loaded and it serves
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return 200 <= resp.status < 300
    except OSError:
        return False


def worker_alive(redis_url: str, hostname: str) -> bool:
    import redis

    from rpsam2_backend.queue.presence import live_workers

    try:
        conn = redis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=3)
        return any(w.get("hostname") == hostname for w in live_workers(conn))
    except redis.exceptions.RedisError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "http":
        return 0 if http_ok(argv[1]) else 1
    if argv == ["worker"]:
        return 0 if worker_alive(os.environ.get("REDIS_URL", ""), socket.gethostname()) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
