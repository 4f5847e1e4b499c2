"""Run a job inline (the embedded default: no Redis) or through RQ; the caller cannot tell.

Jobs are named by dotted path (``rpsam2_backend.jobs.segment_job``) so the web side never
imports torch when a worker does the work.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from rpsam2_backend.errors import BackendError
from rpsam2_backend.settings import Settings

log = logging.getLogger(__name__)

# Dotted names of the job functions in rpsam2_backend/jobs.py: the web side enqueues by name and
# never imports the module (it pulls in torch and SAM2).
SEGMENT_JOB = "rpsam2_backend.jobs.segment_job"
PREENCODE_JOB = "rpsam2_backend.jobs.preencode_job"


def resolve_job(name: str) -> Callable[[dict], dict]:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


class Dispatcher(Protocol):
    def call(self, job: str, payload: dict, routing_key: str | None = None) -> dict: ...

    def submit(self, job: str, payload: dict, routing_key: str | None = None) -> None: ...

    def health(self) -> dict: ...


class InlineDispatcher:
    """Jobs run in this process; fire-and-forget jobs on one background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpsam2-bg")

    def call(self, job: str, payload: dict, routing_key: str | None = None) -> dict:
        return resolve_job(job)(payload)

    def submit(self, job: str, payload: dict, routing_key: str | None = None) -> None:
        def run() -> None:
            try:
                resolve_job(job)(payload)
            except BackendError as exc:
                log.warning("background job %s failed: %s", job, exc)
            except Exception:
                log.exception("background job %s crashed", job)

        self._background.submit(run)

    def health(self) -> dict:
        from rpsam2_backend import runtime  # inline mode: torch is loaded here anyway
        from rpsam2_backend.metrics import runtime_stats

        rt = runtime._runtime  # only report a runtime that exists; never build one for /health
        if rt is None:
            return {"mode": "inline", "workers": []}
        stats = {"name": "inline", "queues": [], **runtime_stats(rt)}
        return {"mode": "inline", "workers": [stats], "model_versions": [stats["version"]]}


def make_dispatcher(settings: Settings) -> Dispatcher:
    if settings.inline:
        return InlineDispatcher(settings)
    from rpsam2_backend.rq_dispatch import RQDispatcher

    return RQDispatcher(settings)
