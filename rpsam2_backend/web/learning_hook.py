"""Web-side hook of the learning loop: count new labels per project, trigger a retrain.

``fit`` (Label Studio webhooks) lands here and returns at once; training never runs in the request.

Triggers, per Label Studio project:
- ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` of a usable annotation (not cancelled, not
  rejected in review, with a brush mask or a keypoint) adds one to the project's counter; when it
  reaches ``RPSAM2_RETRAIN_EVERY`` (0 = never) a retrain is triggered and the counter restarts.
- ``START_TRAINING`` (the "Start training" button) triggers at once.
- Periodic retrains (``RPSAM2_RETRAIN_INTERVAL``) are scheduled by each retrain itself
  (``queue.retrain``).

How a retrain runs (training queue with a fixed job id, or a thread without Redis) is
``queue.retrain.trigger_retrain``.  Counters live in Redis (``rpsam2:retrain:count:<project>``),
or without Redis in ``MODEL_DIR/retrain_counts.json``.

Video: with ``RPSAM2_PROPAGATE_FRAMES`` > 0, a created or updated annotation with brush masks on a
video frame (``labelstudio.video_frames.frame_of`` of the webhook's task, as the job decides) also
starts a propagation of its masks to the task's neighbouring frames, on the training queue
(``queue.propagation.trigger_propagation``); its answer is under ``"propagation"``.  An update
that leaves the frame without masks (or skips it) starts the same job, which then deletes the
frame's earlier propagations.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rpsam2_backend.core.contracts import LabelStudioAccess, PropagationPayload
from rpsam2_backend.core.names import RETRAIN_COUNT_KEY, RETRAIN_COUNTS_FILE
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.labelstudio.video_frames import VideoFrameError, frame_of
from rpsam2_backend.queue.connection import connect
from rpsam2_backend.queue.propagation import trigger_propagation
from rpsam2_backend.queue.retrain import trigger_retrain
from rpsam2_backend.web.state import WebState

log = logging.getLogger(__name__)

COUNTED_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
START_EVENT = "START_TRAINING"


# ------------------------------------------------------------------------------ webhook payloads


def project_of(data: dict[str, Any]) -> str | None:
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


def review_rejected(annotation: dict[str, Any]) -> bool:
    """True when review data says the annotation was rejected (Label Studio Enterprise fields)."""
    if annotation.get("review_result") in ("rejected", False):
        return True
    reviews = annotation.get("reviews") or []
    if reviews and isinstance(reviews[-1], dict) and reviews[-1].get("accepted") is False:
        return True
    return annotation.get("last_action") == "rejected"


def task_of(data: dict[str, Any]) -> int | None:
    """The Label Studio task id of an annotation webhook body (None when absent)."""
    annotation = data.get("annotation") if isinstance(data.get("annotation"), dict) else {}
    task = annotation.get("task")
    if isinstance(task, dict):
        task = task.get("id")
    if task is None and isinstance(data.get("task"), dict):
        task = data["task"].get("id")
    try:
        return None if isinstance(task, bool) or task is None else int(task)
    except (TypeError, ValueError):
        return None


def counts_as_label(annotation: dict[str, Any] | None) -> bool:
    """A usable new label: not cancelled (skipped), not rejected, with a brush mask or a keypoint."""
    if not isinstance(annotation, dict) or annotation.get("was_cancelled") or review_rejected(annotation):
        return False
    types = {item.get("type") for item in annotation.get("result") or [] if isinstance(item, dict)}
    return bool(types & {"brushlabels", "keypointlabels"})


# ------------------------------------------------------------------------------ the hook


def on_event(event: str | None, data: dict[str, Any], state: WebState) -> dict[str, Any]:
    """Count or trigger; returns what happened (Label Studio records {"job": id} for START_TRAINING)."""
    settings = state.settings
    data = data if isinstance(data, dict) else {}
    project = project_of(data)
    if event not in (*COUNTED_EVENTS, START_EVENT) or project is None:
        return {"event": event, "enqueued": False, "reason": "not a training event" if project else "no project"}
    label_studio = None if settings.label_studio.url else state.label_studio
    if event == START_EVENT:
        return {"event": event, **trigger_retrain(settings, project, "START_TRAINING", label_studio)}
    propagation = _propagate(settings, project, data, event, label_studio)
    if not counts_as_label(data.get("annotation")):
        return {"event": event, "enqueued": False, "reason": "annotation is not a usable label", **propagation}
    count = _counter(settings).increment(project)
    out = {"event": event, "project": project, "new_labels": count, **propagation}
    if settings.learning.retrain_every <= 0 or count < settings.learning.retrain_every:
        return {**out, "enqueued": False, "reason": f"{count}/{settings.learning.retrain_every or '-'} new labels"}
    result = trigger_retrain(settings, project, f"{count} new labels", label_studio)
    if result["enqueued"]:
        _counter(settings).reset(project)
    return {**out, **result}


def _propagate(
    settings: Settings, project: str, data: dict[str, Any], event: str, label_studio: LabelStudioAccess | None
) -> dict[str, Any]:
    """Start a video propagation of a submitted frame's masks (RPSAM2_PROPAGATE_FRAMES > 0), or,
    when an update took the masks away (or skipped the task), the job that withdraws the
    propagations the frame made before."""
    annotation = data.get("annotation") if isinstance(data.get("annotation"), dict) else {}
    has_masks = not annotation.get("was_cancelled") and any(
        isinstance(i, dict) and i.get("type") == "brushlabels" for i in annotation.get("result") or [])
    task = task_of(data)
    if settings.learning.propagate_frames <= 0 or task is None or not (has_masks or event == "ANNOTATION_UPDATED"):
        return {}
    if not _may_be_video_frame(data, settings):
        # The job would export the project only to fail, and its "failed" would replace the last
        # real propagation in /health: plain image tasks of a project never start one.
        return {"propagation": {"enqueued": False, "reason": f"task {task} is not a video frame"}}
    payload: PropagationPayload = {"project": project, "task": task, "reason": event}
    if isinstance(annotation.get("id"), int):
        payload["annotation"] = annotation["id"]
    if label_studio:
        payload["label_studio"] = label_studio
    try:
        return {"propagation": trigger_propagation(settings, payload)}
    except Exception as exc:  # a Redis hiccup must not lose the label count (nor answer 500 to LS)
        log.warning("propagation of task %s not started: %s", task, exc)
        return {"propagation": {"enqueued": False, "reason": f"{type(exc).__name__}: {exc}"}}


def _may_be_video_frame(data: dict[str, Any], settings: Settings) -> bool:
    """False only when the webhook's task data says the task is no video frame.  Frame keys the
    job cannot use, or a body without task data, go to the job, which says what is wrong."""
    task = data.get("task")
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        return True
    try:
        return frame_of(task, settings.learning.video_key, settings.learning.frame_key) is not None
    except VideoFrameError:
        return True


# ------------------------------------------------------------------------------ counters


class _RedisCounter:
    def __init__(self, settings: Settings) -> None:
        self.conn = connect(settings.queue.redis_url, settings.queue.redis_timeout)

    def increment(self, project: str) -> int:
        return int(self.conn.incr(RETRAIN_COUNT_KEY.format(project=project)))

    def reset(self, project: str) -> None:
        self.conn.set(RETRAIN_COUNT_KEY.format(project=project), 0)


class _FileCounter:
    """Counts in MODEL_DIR/retrain_counts.json under an flock (web workers may be several processes)."""

    def __init__(self, settings: Settings) -> None:
        self.path = Path(settings.model.model_dir) / RETRAIN_COUNTS_FILE

    def _update(self, project: str, change: Callable[[int], int]) -> int:
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
