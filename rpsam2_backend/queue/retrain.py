"""The one way a retrain gets run: enqueued now, scheduled for later, or (no Redis) a thread.

- ``trigger_retrain`` (a webhook count, START_TRAINING, ``rpsam2-retrain --enqueue``): with Redis
  the job goes to the training queue under the fixed id ``rpsam2-retrain-<project>`` with rq's
  ``unique=True``, so a second trigger while one is queued or running is refused by Redis itself;
  without Redis it runs in a background thread of this process, one per project at a time.
- ``schedule_retrain`` (RPSAM2_RETRAIN_INTERVAL): every retrain ends by scheduling the next one
  that far ahead with ``Queue.enqueue_in`` (the training worker runs rq's scheduler); inline, the
  thread re-arms a timer instead.
- ``retrain_run_lock``: the job holds it while it runs (a Redis lock, else an flock under
  MODEL_DIR), so a scheduled run never overlaps a triggered one.

The job is named (``core.names.RETRAIN_JOB``) and resolved only where it runs: nothing here
imports ``trainer``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis

from rpsam2_backend.core.contracts import LabelStudioAccess, RetrainPayload
from rpsam2_backend.core.names import (
    RETRAIN_ENQUEUE_LOCK_KEY,
    RETRAIN_ENQUEUE_LOCK_S,
    RETRAIN_ENQUEUE_WAIT_S,
    RETRAIN_JOB,
    RETRAIN_RUN_LOCK_GRACE_S,
    RETRAIN_RUN_LOCK_KEY,
    RETRAIN_SCHEDULE_PREFIX,
    retrain_job_id,
)
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.queue.connection import connect
from rpsam2_backend.queue.dispatch import resolve_job

log = logging.getLogger(__name__)


def trigger_retrain(
    settings: Settings, project: str, reason: str, label_studio: LabelStudioAccess | None = None
) -> dict[str, Any]:
    """Start a retrain of ``project`` now (or say why not): {"enqueued", "job", ...}."""
    payload: RetrainPayload = {"project": str(project), "reason": reason}
    if label_studio:
        payload["label_studio"] = label_studio
    if settings.inline:
        return _start_thread(settings, payload)
    return enqueue_retrain(settings, payload)


def _job_options(settings: Settings, payload: RetrainPayload, job_id: str) -> dict[str, Any]:
    learning = settings.learning
    return {
        "job_id": job_id, "unique": True, "job_timeout": learning.retrain_timeout,
        "result_ttl": learning.retrain_result_ttl, "failure_ttl": settings.queue.failure_ttl,
        "description": f"retrain project {payload['project']} ({payload.get('reason', '')})",
    }


def enqueue_retrain(
    settings: Settings, payload: RetrainPayload, connection: redis.Redis | None = None
) -> dict[str, Any]:
    """Put the retrain on the training queue under its fixed id; refused while one is queued/running."""
    from rq import Queue
    from rq.exceptions import DuplicateJobError, NoSuchJobError
    from rq.job import Job, JobStatus

    conn = connection or connect(settings.queue.redis_url, settings.queue.redis_timeout)
    project = str(payload["project"])
    job_id = retrain_job_id(project)
    queue = Queue(settings.queue.train_queue, connection=conn)
    # The lock only serialises "clear a finished job, enqueue a new one"; uniqueness itself is
    # rq's atomic check in Redis.
    lock = conn.lock(RETRAIN_ENQUEUE_LOCK_KEY.format(project=project), timeout=RETRAIN_ENQUEUE_LOCK_S,
                     blocking_timeout=RETRAIN_ENQUEUE_WAIT_S)
    with lock:
        try:
            old = Job.fetch(job_id, connection=conn)
            if old.get_status() in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                old.delete()
        except NoSuchJobError:
            pass
        try:
            queue.enqueue(RETRAIN_JOB, payload, **_job_options(settings, payload, job_id))
        except DuplicateJobError:
            log.info("retrain of project %s not enqueued: %s is already queued or running", project, job_id)
            reason = "a retrain of this project is already queued or running"
            return {"enqueued": False, "job": job_id, "reason": reason}
    log.info("retrain of project %s enqueued as %s on %s (%s)", project, job_id, queue.name, payload.get("reason"))
    return {"enqueued": True, "job": job_id, "queue": queue.name}


def schedule_retrain(settings: Settings, payload: RetrainPayload) -> str | None:
    """With RPSAM2_RETRAIN_INTERVAL and Redis: schedule the next run unless one is already scheduled."""
    interval = settings.learning.retrain_interval
    if interval <= 0 or settings.inline:
        return None
    from rq import Queue
    from rq.registry import ScheduledJobRegistry

    project = str(payload["project"])
    conn = connect(settings.queue.redis_url, settings.queue.redis_timeout)
    queue = Queue(settings.queue.train_queue, connection=conn)
    prefix = RETRAIN_SCHEDULE_PREFIX.format(project=project)
    if any(job_id.startswith(prefix) for job_id in ScheduledJobRegistry(queue=queue).get_job_ids()):
        return None
    job_id = f"{prefix}{int(time.time()) + interval}"
    scheduled: RetrainPayload = {**payload, "reason": "schedule"}
    queue.enqueue_in(timedelta(seconds=interval), RETRAIN_JOB, scheduled, **_job_options(settings, scheduled, job_id))
    log.info("next retrain of project %s scheduled in %d s (%s)", project, interval, job_id)
    return job_id


@contextlib.contextmanager
def retrain_run_lock(settings: Settings, project: str) -> Iterator[bool]:
    """Yields True when this process may retrain the project now, False when another run holds it."""
    if not settings.inline:
        lock = connect(settings.queue.redis_url, settings.queue.redis_timeout).lock(
            RETRAIN_RUN_LOCK_KEY.format(project=project),
            timeout=settings.learning.retrain_timeout + RETRAIN_RUN_LOCK_GRACE_S,
        )
        got = lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                with contextlib.suppress(Exception):
                    lock.release()
        return
    path = Path(settings.model.model_dir) / f".retrain-{project}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ inline (no Redis)


_threads: dict[str, threading.Thread] = {}
_threads_lock = threading.Lock()


def _start_thread(settings: Settings, payload: RetrainPayload) -> dict[str, Any]:
    project = payload["project"]
    job_id = retrain_job_id(project)
    with _threads_lock:
        running = _threads.get(project)
        if running is not None and running.is_alive():
            return {"enqueued": False, "job": job_id, "reason": "a retrain of this project is already running"}
        thread = threading.Thread(
            target=_run_inline, args=(settings, payload), name=f"retrain-{project}", daemon=True
        )
        _threads[project] = thread
        thread.start()
    return {"enqueued": True, "job": job_id, "queue": "inline thread"}


def _run_inline(settings: Settings, payload: RetrainPayload) -> None:
    try:
        resolve_job(RETRAIN_JOB)(payload, settings=settings)
    except Exception:  # the job records its own failure; a thread has nobody else to tell
        log.exception("inline retrain of project %s failed", payload.get("project"))
    interval = settings.learning.retrain_interval
    if interval > 0:
        timer = threading.Timer(interval, _start_thread, args=(settings, {**payload, "reason": "schedule"}))
        timer.daemon = True
        timer.start()


def wait_for_inline(project: str, timeout_s: float | None = None) -> bool:
    """Join the project's inline retrain thread (tests, CLI); True when none is running any more."""
    with _threads_lock:
        thread = _threads.get(str(project))
    if thread is not None:
        thread.join(timeout_s)
        return not thread.is_alive()
    return True
