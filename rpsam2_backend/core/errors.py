"""Errors that carry an HTTP status, so every layer can raise and only the web face translates.

Jobs may run in another process (an RQ worker); their exceptions travel back as text.  The
``[status]`` prefix in ``str(err)`` lets ``from_exception_text`` rebuild the same error there.
"""

from __future__ import annotations

import re


class BackendError(Exception):
    """Base error: ``status`` is the HTTP status the web face answers with."""

    status: int = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        if status is not None:
            self.status = status
        self.message = message
        super().__init__(f"[{self.status}] {message}")


class BadRequest(BackendError):
    """The request itself is wrong (malformed JSON, bad click, unknown label)."""

    status = 400


class ImageError(BackendError):
    """The task's image cannot be used (missing, unreachable, corrupt, too large, forbidden)."""

    status = 422


class ServiceUnavailable(BackendError):
    """A dependency (Redis, a worker) is not there right now; retrying later may work."""

    status = 503


class JobTimeout(BackendError):
    """The worker did not answer within the configured time."""

    status = 504


class ConfigError(BackendError):
    """Settings are missing or wrong; raised at start-up so the process fails fast."""

    status = 500


_STATUS_RE = re.compile(r"\[(\d{3})\] (.*)", re.DOTALL)


def from_exception_text(text: str) -> BackendError:
    """Rebuild a BackendError from the text of a remote traceback (last line wins)."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "unknown worker error"
    _, _, detail = last.partition(": ")
    match = _STATUS_RE.match(detail or last)
    if match:
        return BackendError(match.group(2), status=int(match.group(1)))
    return BackendError(f"worker error: {last}", status=500)
