"""Web-side hook of the learning loop: count new labels per project, enqueue a retrain.

``fit`` (Label Studio webhooks) lands here and returns at once; training never runs in the request.

Triggers, per Label Studio project:
- ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` of a usable annotation (not cancelled, not
  rejected in review, with a brush mask or a keypoint) adds one to the project's counter; when it
  reaches ``RPSAM2_RETRAIN_EVERY`` (0 = never) a retrain is enqueued and the counter restarts.
- ``START_TRAINING`` (the "Start training" button) enqueues at once.
- Periodic: with ``RPSAM2_RETRAIN_INTERVAL`` seconds set, every retrain ends by scheduling the next
  one that far ahead (``Queue.enqueue_in``: the training worker must run rq's scheduler, which
  ``rq worker --with-scheduler`` does; ``rpsam2-retrain --project ID`` without Redis loops instead).

With Redis the job goes to the training queue (``RPSAM2_TRAIN_QUEUE``) by dotted name, with the
fixed id ``rpsam2-retrain-<project>`` and rq's ``unique=True``, so a second trigger while one is
queued or running is refused by Redis itself (the counter then stays up and the next label tries
again).  The scheduled run has its own fixed id; the job's run lock (``trainer.retrain``) keeps
it from overlapping a triggered one.  Counters live in Redis (``rpsam2:retrain:count:<project>``).
Without Redis the counters live in ``MODEL_DIR/retrain_counts.json`` and the retrain runs in a
background thread of this process, one per project at a time.

Nothing here imports ``trainer``: the job is named, and resolved only where it runs.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import logging
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

from rpsam2_backend.settings import Settings

log = logging.getLogger(__name__)

RETRAIN_JOB = "trainer.retrain.retrain_job"
COUNTED_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
START_EVENT = "START_TRAINING"
STATUS_FILE = "retrain_status.json"
COUNTS_FILE = "retrain_counts.json"
COUNT_KEY = "rpsam2:retrain:count:{project}"
ENQUEUE_LOCK_KEY = "rpsam2:retrain:enqueue:{project}"


def retrain_job_id(project: int | str) -> str:
    return f"rpsam2-retrain-{project}"


def scheduled_job_id(project: int | str) -> str:
    return f"rpsam2-retrain-{project}-scheduled"


# ------------------------------------------------------------------------------ webhook payloads


def project_of(data: dict) -> str | None:
    """The Label Studio project id of a webhook body, as a string (None when absent)."""
    project = data.get("project")
    if isinstance(project, dict):
        project = project.get("id")
    if project is None and isinstance(data.get("annotation"), dict):
        project = data["annotation"].get("project")
    if project is None and isinstance(data.get("task"), dict):
        project = data["task"].get("project")
    if isinstance(project, bool) or project in (None, ""):
        return None
    if isinstance(project, str) and "." in project:  # /setup's "<id>.<timestamp>" form
        project = project.split(".", 1)[0]
    return str(project)


def review_rejected(annotation: dict) -> bool:
    """True when review data says the annotation was rejected (Label Studio Enterprise fields)."""
    if annotation.get("review_result") in ("rejected", False):
        return True
    reviews = annotation.get("reviews") or []
    if reviews and isinstance(reviews[-1], dict) and reviews[-1].get("accepted") is False:
        return True
    return annotation.get("last_action") == "rejected"


def counts_as_label(annotation: dict | None) -> bool:
    """A usable new label: not cancelled (skipped), not rejected, with a brush mask or a keypoint."""
    if not isinstance(annotation, dict) or annotation.get("was_cancelled") or review_rejected(annotation):
        return False
    types = {item.get("type") for item in annotation.get("result") or [] if isinstance(item, dict)}
    return bool(types & {"brushlabels", "keypointlabels"})


# ------------------------------------------------------------------------------ the hook


def on_event(event: str | None, data: dict, state: object) -> dict:
    """Count or enqueue; returns what happened (Label Studio records {"job": id} for START_TRAINING)."""
    settings: Settings = state.settings  # type: ignore[attr-defined]
    data = data if isinstance(data, dict) else {}
    project = project_of(data)
    if event not in (*COUNTED_EVENTS, START_EVENT) or project is None:
        return {"event": event, "enqueued": False, "reason": "not a training event" if project else "no project"}
    label_studio = None if settings.label_studio_url else getattr(state, "label_studio", None)
    if event == START_EVENT:
        return {"event": event, **trigger_retrain(settings, project, "START_TRAINING", label_studio)}
    if not counts_as_label(data.get("annotation")):
        return {"event": event, "enqueued": False, "reason": "annotation is not a usable label"}
    count = _counter(settings).increment(project)
    out = {"event": event, "project": project, "new_labels": count}
    if settings.retrain_every <= 0 or count < settings.retrain_every:
        return {**out, "enqueued": False, "reason": f"{count}/{settings.retrain_every or '-'} new labels"}
    result = trigger_retrain(settings, project, f"{count} new labels", label_studio)
    if result["enqueued"]:
        _counter(settings).reset(project)
    return {**out, **result}


def trigger_retrain(settings: Settings, project: str, reason: str, label_studio: dict | None = None) -> dict:
    payload = {"project": str(project), "reason": reason}
    if label_studio:
        payload["label_studio"] = label_studio
    if settings.inline:
        return _start_thread(settings, payload)
    return enqueue_retrain(settings, payload)


# ------------------------------------------------------------------------------ RQ


def _connect(settings: Settings):
    from rpsam2_backend.rq_dispatch import connect

    return connect(settings.redis_url, settings.redis_timeout)


def enqueue_retrain(settings: Settings, payload: dict, connection=None, delay_s: float = 0) -> dict:
    """Put the retrain on the training queue under its fixed id; refused while one is queued/running.

    ``delay_s`` > 0 schedules it (rq scheduler) under the separate scheduled id.
    """
    from rq import Queue
    from rq.exceptions import DuplicateJobError, NoSuchJobError
    from rq.job import Job, JobStatus

    conn = connection or _connect(settings)
    project = str(payload["project"])
    job_id = scheduled_job_id(project) if delay_s > 0 else retrain_job_id(project)
    queue = Queue(settings.train_queue, connection=conn)
    options = {
        "job_id": job_id, "unique": True, "job_timeout": settings.retrain_timeout,
        "result_ttl": 86400, "failure_ttl": settings.failure_ttl,
        "description": f"retrain project {project} ({payload.get('reason', '')})",
    }
    # The lock only serialises "clear a finished job, enqueue a new one"; uniqueness itself is
    # rq's atomic check in Redis.
    with conn.lock(ENQUEUE_LOCK_KEY.format(project=project), timeout=30, blocking_timeout=10):
        try:
            old = Job.fetch(job_id, connection=conn)
            if old.get_status() in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                old.delete()
        except NoSuchJobError:
            pass
        try:
            if delay_s > 0:
                queue.enqueue_in(timedelta(seconds=delay_s), RETRAIN_JOB, payload, **options)
            else:
                queue.enqueue(RETRAIN_JOB, payload, **options)
        except DuplicateJobError:
            log.info("retrain of project %s not enqueued: %s is already queued or running", project, job_id)
            reason = "a retrain of this project is already queued or running"
            return {"enqueued": False, "job": job_id, "reason": reason}
    log.info("retrain of project %s enqueued as %s on %s (%s)", project, job_id, queue.name, payload.get("reason"))
    return {"enqueued": True, "job": job_id, "queue": queue.name, "delay_s": delay_s}


# ------------------------------------------------------------------------------ inline


_threads: dict[str, threading.Thread] = {}
_threads_lock = threading.Lock()


def _start_thread(settings: Settings, payload: dict) -> dict:
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


def _run_inline(settings: Settings, payload: dict) -> None:
    module, attr = RETRAIN_JOB.rsplit(".", 1)
    try:
        job = getattr(importlib.import_module(module), attr)
        job(payload, settings=settings)
    except Exception:  # the job records its own failure; a thread has nobody else to tell
        log.exception("inline retrain of project %s failed", payload.get("project"))
    interval = settings.retrain_interval
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


# ------------------------------------------------------------------------------ counters


class _RedisCounter:
    def __init__(self, settings: Settings) -> None:
        self.conn = _connect(settings)

    def increment(self, project: str) -> int:
        return int(self.conn.incr(COUNT_KEY.format(project=project)))

    def reset(self, project: str) -> None:
        self.conn.set(COUNT_KEY.format(project=project), 0)


class _FileCounter:
    """Counts in MODEL_DIR/retrain_counts.json under an flock (web workers may be several processes)."""

    def __init__(self, settings: Settings) -> None:
        self.path = Path(settings.model_dir) / COUNTS_FILE

    def _update(self, project: str, change) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                counts = json.loads(self.path.read_text()) if self.path.is_file() else {}
            except ValueError:
                counts = {}
            counts[project] = change(int(counts.get(project, 0)))
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(counts))
            os.replace(tmp, self.path)
            return counts[project]

    def increment(self, project: str) -> int:
        return self._update(project, lambda n: n + 1)

    def reset(self, project: str) -> None:
        self._update(project, lambda n: 0)


def _counter(settings: Settings) -> _RedisCounter | _FileCounter:
    return _FileCounter(settings) if settings.inline else _RedisCounter(settings)


# ------------------------------------------------------------------------------ status


def status_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / STATUS_FILE


def read_status(model_dir: str | Path) -> dict | None:
    """The last retrain's status (what /health shows), or None before the first one."""
    try:
        return json.loads(status_path(model_dir).read_text())
    except (OSError, ValueError):
        return None


def write_status(model_dir: str | Path, status: dict) -> dict:
    path = status_path(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    status = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "timestamp": time.time(), **status}
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(status, indent=2, default=str))
    os.replace(tmp, path)
    return status
