"""The one way a video propagation gets run: on the training queue, or (no Redis) in a thread.

A submitted (or updated) frame annotation with brush masks starts a propagation of its masks to
the neighbouring frames (``trainer.video.job.propagate_job``, named in ``core.names``); an update
that leaves no masks starts the same job, which then withdraws what the frame had propagated.  The job
reads the task's *latest* annotation from Label Studio when it starts, so at most one waiting
job per task is ever needed:

- With Redis, a task has two fixed job ids (``core.names.propagate_job_ids``).  A submission
  while one of them waits (queued, or deferred behind a running one) adds nothing: the waiting job
  will propagate the newest annotation anyway.  A submission while one runs enqueues the other id,
  depending on the running job (rq ``Dependency``, failures allowed), so it starts only after it:
  two propagations of one task never run side by side, whatever the number of training workers,
  and the newest always runs last.  Otherwise the first id is enqueued (its finished record
  deleted first).  An enqueue lock per task serialises these decisions across web processes.
- Without Redis, one thread per task runs the job; a submission while it runs is remembered (the
  newest one replaces an older one still waiting) and run by the same thread afterwards.

Job ids and threads are per task, so seeds on two frames of one video may run at once; the job
holds ``propagation_video_lock`` from reading the project's predictions to deleting the ones it
supersedes, so the later of the two sees the earlier one's predictions and supersedes them on
the frames both cover (a Redis lock with Redis, else an flock under MODEL_DIR, like
``queue.retrain.retrain_run_lock``).

Nothing here imports ``trainer``: the job is resolved by name where it runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from rpsam2_backend.core.contracts import PropagationPayload
from rpsam2_backend.core.names import (
    PROPAGATE_ENQUEUE_LOCK_KEY,
    PROPAGATE_JOB,
    PROPAGATE_VIDEO_LOCK_GRACE_S,
    PROPAGATE_VIDEO_LOCK_KEY,
    RETRAIN_ENQUEUE_LOCK_S,
    RETRAIN_ENQUEUE_WAIT_S,
    propagate_job_ids,
)
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.queue.connection import connect
from rpsam2_backend.queue.dispatch import resolve_job

log = logging.getLogger(__name__)

WAITING = ("queued", "deferred", "scheduled")
RUNNING = ("started",)


def trigger_propagation(settings: Settings, payload: PropagationPayload) -> dict[str, Any]:
    """Propagate the masks of ``payload["task"]`` soon (or say why not): {"enqueued", "job", ...}."""
    if settings.inline:
        return _start_inline(settings, payload)
    return enqueue_propagation(settings, payload)


def enqueue_propagation(
    settings: Settings, payload: PropagationPayload, connection: redis.Redis | None = None
) -> dict[str, Any]:
    """Put the propagation on the training queue (rules in the module docstring)."""
    from rq import Queue
    from rq.exceptions import NoSuchJobError
    from rq.job import Dependency, Job

    conn = connection or connect(settings.queue.redis_url, settings.queue.redis_timeout)
    project, task = str(payload["project"]), int(payload["task"])
    ids = propagate_job_ids(project, task)
    queue = Queue(settings.queue.train_queue, connection=conn)
    lock = conn.lock(PROPAGATE_ENQUEUE_LOCK_KEY.format(project=project, task=task),
                     timeout=RETRAIN_ENQUEUE_LOCK_S, blocking_timeout=RETRAIN_ENQUEUE_WAIT_S)
    with lock:
        jobs: dict[str, Any] = {}
        for job_id in ids:
            try:
                jobs[job_id] = Job.fetch(job_id, connection=conn)
            except NoSuchJobError:
                continue
        status = {job_id: str(getattr(job.get_status(), "value", job.get_status())) for job_id, job in jobs.items()}
        waiting = [job_id for job_id in ids if status.get(job_id) in WAITING]
        if waiting:
            log.info("propagation of task %s (project %s) already waits as %s", task, project, waiting[0])
            return {"enqueued": False, "job": waiting[0],
                    "reason": "a propagation of this task is already waiting; it reads the task's latest annotation"}
        running = [job_id for job_id in ids if status.get(job_id) in RUNNING]
        free = next(job_id for job_id in ids if job_id not in running)
        if free in jobs:
            jobs[free].delete()  # a finished, failed or stopped record under the id we reuse
        options: dict[str, Any] = {
            "job_id": free, "job_timeout": settings.learning.propagate_timeout,
            "result_ttl": settings.queue.result_ttl, "failure_ttl": settings.queue.failure_ttl,
            "description": f"propagate task {task} of project {project} ({payload.get('reason', '')})",
        }
        if running:
            options["depends_on"] = Dependency(jobs=[running[0]], allow_failure=True)
        queue.enqueue(PROPAGATE_JOB, payload, **options)
    log.info("propagation of task %s (project %s) enqueued as %s on %s%s", task, project, free, queue.name,
             f" after {running[0]}" if running else "")
    return {"enqueued": True, "job": free, "queue": queue.name, **({"after": running[0]} if running else {})}


@contextlib.contextmanager
def propagation_video_lock(settings: Settings, project: str, video: str) -> Iterator[None]:
    """Held while a propagation of ``video`` reads, uploads and supersedes predictions; blocks
    while another propagation of the same video holds it (rules in the module docstring)."""
    if not settings.inline:
        timeout = settings.learning.propagate_timeout
        # Expires a grace period after the job's own timeout, so a killed worker cannot block the
        # video for ever; waiting longer than a job may run would outlive this job's timeout anyway.
        lock = connect(settings.queue.redis_url, settings.queue.redis_timeout).lock(
            PROPAGATE_VIDEO_LOCK_KEY.format(project=project, video=video),
            timeout=timeout + PROPAGATE_VIDEO_LOCK_GRACE_S, blocking_timeout=timeout,
        )
        if not lock.acquire():
            raise TimeoutError(f"video {video!r} of project {project} stayed locked by another propagation "
                               f"for {timeout} s (RPSAM2_PROPAGATE_TIMEOUT)")
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # expired: the next holder is already on its way
                lock.release()
        return
    # An flock (not a threading.Lock): inline web workers may be several processes, and flock
    # also excludes two threads of one process that open the file separately.  The video's
    # name is free text, hence a digest in the file name.
    digest = hashlib.sha1(video.encode()).hexdigest()[:16]
    path = Path(settings.model.model_dir) / f".propagate-{project}-{digest}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ inline (no Redis)


@dataclass
class _Slot:
    thread: threading.Thread
    pending: PropagationPayload | None = None


_slots: dict[tuple[str, int], _Slot] = {}
_slots_lock = threading.Lock()


def _start_inline(settings: Settings, payload: PropagationPayload) -> dict[str, Any]:
    key = (str(payload["project"]), int(payload["task"]))
    job_id = propagate_job_ids(*key)[0]
    with _slots_lock:
        slot = _slots.get(key)
        if slot is not None:  # a thread of this task is running: it runs the newest one afterwards
            replaced = slot.pending is not None
            slot.pending = payload
            return {"enqueued": True, "job": job_id, "queue": "inline thread", "after": "the running propagation",
                    **({"replaced": "an older waiting submission"} if replaced else {})}
        thread = threading.Thread(target=_run_inline, args=(settings, key, payload),
                                  name=f"propagate-{key[0]}-{key[1]}", daemon=True)
        _slots[key] = _Slot(thread)
        thread.start()
    return {"enqueued": True, "job": job_id, "queue": "inline thread"}


def _run_inline(settings: Settings, key: tuple[str, int], payload: PropagationPayload | None) -> None:
    while payload is not None:
        try:
            resolve_job(PROPAGATE_JOB)(payload, settings=settings)
        except Exception:  # the job records its own failure; a thread has nobody else to tell
            log.exception("inline propagation of task %s (project %s) failed", key[1], key[0])
        with _slots_lock:
            slot = _slots[key]
            payload, slot.pending = slot.pending, None
            if payload is None:
                del _slots[key]  # under the lock: a later submission starts a new thread


def wait_for_inline_propagation(project: str, task: int, timeout_s: float | None = None) -> bool:
    """Join the task's inline propagation thread (tests, CLI); True when none is running any more."""
    with _slots_lock:
        slot = _slots.get((str(project), int(task)))
    if slot is None:
        return True
    slot.thread.join(timeout_s)
    return not slot.thread.is_alive()
