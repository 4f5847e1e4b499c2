"""The Redis client of the web process and the helpers: fail fast when Redis is down, reconnect
by itself when it is back, never show a password."""

from __future__ import annotations

import re

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def connect(url: str, timeout: float) -> redis.Redis:
    """One retry without back-off replaces a pooled connection that died with a Redis restart;
    more retries would only stretch the time a click waits for a 503."""
    t = timeout if timeout > 0 else None
    return redis.Redis.from_url(
        url, socket_timeout=t, socket_connect_timeout=t, retry=Retry(NoBackoff(), 1), health_check_interval=30
    )


def mask_url(url: str) -> str:
    """redis://user:secret@host/0 -> redis://***@host/0 (for messages and /health)."""
    return re.sub(r"//[^@/]*@", "//***@", url)
