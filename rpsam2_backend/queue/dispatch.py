"""Run a job inline (the embedded default: no Redis) or through RQ; the caller cannot tell.

Jobs are named by dotted path (``rpsam2_backend.core.names``) and resolved where they run, so the
web process imports no torch when a worker does the work, and the web layer reaches the engine
only through the inline dispatcher.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from rpsam2_backend.core.errors import BackendError
from rpsam2_backend.core.names import INLINE_HEALTH, WARM_RUNTIME
from rpsam2_backend.core.settings import Settings

log = logging.getLogger(__name__)


def resolve_job(name: str) -> Callable[..., Any]:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


class Dispatcher(Protocol):
    def call(self, job: str, payload: Any, routing_key: str | None = None) -> Any: ...

    def submit(self, job: str, payload: Any, routing_key: str | None = None) -> None: ...

    def warm(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


class InlineDispatcher:
    """Jobs run in this process; fire-and-forget jobs on one background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpsam2-bg")

    def call(self, job: str, payload: Any, routing_key: str | None = None) -> Any:
        return resolve_job(job)(payload)

    def submit(self, job: str, payload: Any, routing_key: str | None = None) -> None:
        def run() -> None:
            try:
                resolve_job(job)(payload)
            except BackendError as exc:
                log.warning("background job %s failed: %s", job, exc)
            except Exception:
                log.exception("background job %s crashed", job)

        self._background.submit(run)

    def warm(self) -> None:
        """Load SAM2 now, so that a bad setting fails at start rather than at the first click."""
        resolve_job(WARM_RUNTIME)(self.settings)

    def health(self) -> dict[str, Any]:
        return resolve_job(INLINE_HEALTH)()


def make_dispatcher(settings: Settings) -> Dispatcher:
    if settings.inline:
        return InlineDispatcher(settings)
    from rpsam2_backend.queue.rq_dispatch import RQDispatcher

    return RQDispatcher(settings)
