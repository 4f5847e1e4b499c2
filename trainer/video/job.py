"""The propagation job: a submitted frame's masks, tracked through its video, as predictions.

``propagate_job(payload)`` runs on the training queue (RQ names it ``trainer.video.job.propagate_job``)
or in a thread of the inline server (``rpsam2_backend.queue.propagation``):

1. read the project's label config and all its tasks from Label Studio;
2. find the frames of the task's video (``labelstudio.video_frames``: data keys
   RPSAM2_VIDEO_KEY / RPSAM2_FRAME_KEY, else Cataract-1K / CaDIS file names) and the window of
   up to RPSAM2_PROPAGATE_FRAMES frames after it (and before it with RPSAM2_PROPAGATE_BACKWARD),
   stopping at the end of the video, at a gap in the frame numbers, or before a frame a person
   labelled (their labels are the better seed: submitting them propagates from there);
3. take the video's lock (``queue.propagation.propagation_video_lock``) and read the project's
   predictions: a propagation from another frame of the same video runs before or after this
   part, never beside it, so the later one supersedes the earlier one where both cover a frame;
4. seed SAM2's video predictor with the task's latest annotation's brush regions (one object per
   region) and track them (``engine.video.tracker``); an object that is lost or whose
   confidence falls below RPSAM2_PROPAGATE_MIN_CONFIDENCE stops being propagated;
5. upload one prediction per visited frame (``trainer.video.predictions``), in batches of
   RPSAM2_PSEUDO_BATCH, tagged "propagated from task T (annotation A) by <sam2 config>";
6. delete the older propagated predictions this one supersedes, and release the lock;
7. record the outcome in ``MODEL_DIR/propagation_status.json`` (shown by /health).

A task whose latest annotation has no brush mask any more (masks removed, annotation skipped)
propagates nothing and its earlier propagations are deleted ("withdrawn").

All or nothing for the annotator: a job that fails after uploading some batches deletes what it
uploaded (the older predictions were not touched yet), so a frame never shows two propagations.

Frames are loaded from Label Studio one at a time, when the tracker reaches them.  Bad input
(a task that is no video frame, a mask whose size is not the image's, frames of different sizes)
ends the job as "failed" with a message naming the task; the exception propagates so RQ marks it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from rpsam2_backend.core.contracts import PropagationPayload
from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.core.names import propagate_job_ids, propagation_version
from rpsam2_backend.core.propagation_status import write_propagation_status
from rpsam2_backend.core.settings import Settings, get_settings
from rpsam2_backend.engine.build import resolve_device
from rpsam2_backend.engine.video.tracker import VideoEngine, shared_video_engine
from rpsam2_backend.labelstudio.images import ImageLoader
from rpsam2_backend.labelstudio.label_config import LabelConfig, parse_label_config
from rpsam2_backend.labelstudio.tasks import image_url
from rpsam2_backend.labelstudio.video_frames import FrameTask, Window, propagation_window
from rpsam2_backend.queue.propagation import propagation_video_lock
from trainer.accepted_labels import LabelStudioClient
from trainer.video.predictions import (
    SeedObject,
    frame_prediction,
    is_annotated,
    latest_mask_annotation,
    seed_objects,
    superseded,
)

log = logging.getLogger("trainer.video")


class TaskFrames(Sequence[np.ndarray]):
    """The window's frame images, fetched when the tracker asks (one at a time, never all)."""

    def __init__(self, frames: list[FrameTask], loader: ImageLoader) -> None:
        self.frames = frames
        self.loader = loader
        self._last: tuple[int, np.ndarray] | None = None  # the seed frame is asked for a few times in a row

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index):  # type: ignore[override]
        if self._last is None or self._last[0] != index:
            self._last = (index, self.loader.load(self.frames[index].image_url).rgb)
        return self._last[1]


def _image_url(config: LabelConfig):
    def url_of(task: dict) -> str | None:
        try:
            return image_url(task, config)
        except BadRequest:
            return None

    return url_of


def _client_and_loader(settings: Settings, payload: PropagationPayload) -> tuple[LabelStudioClient, ImageLoader]:
    ls = payload.get("label_studio")
    if not settings.label_studio.url and ls and ls.get("url"):
        settings = settings.with_("label_studio", url=ls["url"], api_key=ls.get("token", ""))
    return LabelStudioClient.from_settings(settings), ImageLoader(settings)


def _video_engine(settings: Settings) -> VideoEngine:
    model = settings.model
    return shared_video_engine(model.sam2_config, settings.resolved_checkpoint(), resolve_device(model.device),
                               settings.learning.propagate_image_size)


def _progress(message: str, **info: Any) -> None:
    from rq import get_current_job

    job = get_current_job()
    if job is not None:
        job.meta["progress"] = {"message": message, **info}
        with contextlib.suppress(Exception):  # progress must never break the job
            job.save_meta()


def propagate_job(
    payload: PropagationPayload, settings: Settings | None = None, engine: VideoEngine | None = None
) -> dict[str, Any]:
    """{"project", "task", ["annotation", "reason", "label_studio"]} -> the propagation's status dict."""
    settings = settings or get_settings()
    if not isinstance(payload, dict) or payload.get("project") in (None, "") or payload.get("task") is None:
        raise ValueError("propagation payload needs a 'project' and a 'task'")
    project, task = str(payload["project"]), int(payload["task"])
    from rq import get_current_job

    job = get_current_job()
    base = {"task": task, "job_id": job.id if job else propagate_job_ids(project, task)[0],
            "trigger": payload.get("reason", "")}
    model_dir = settings.model.model_dir
    write_propagation_status(model_dir, project, {**base, "status": "running"})
    started = time.time()
    try:
        status = _run(settings, payload, project, task, engine)
    except Exception as exc:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        write_propagation_status(model_dir, project, {**base, "status": "failed", "reason": message,
                                                      "seconds": round(time.time() - started, 2)})
        log.exception("propagation of task %s (project %s) failed", task, project)
        raise
    return write_propagation_status(model_dir, project, {**base, **status, "seconds": round(time.time() - started, 2)})


def _run(settings: Settings, payload: PropagationPayload, project: str, task: int,
         engine: VideoEngine | None) -> dict[str, Any]:
    learning = settings.learning
    client, loader = _client_and_loader(settings, payload)
    config = parse_label_config(client.label_config(project))
    tasks = client.all_tasks(project)
    backward = learning.propagate_frames if learning.propagate_backward else 0
    window = propagation_window(tasks, task, learning.propagate_frames, backward,
                                learning.video_key, learning.frame_key, _image_url(config), is_annotated)
    seed = window.frames[window.seed]
    annotation = latest_mask_annotation(seed.task)
    if annotation is None:
        return _withdraw_source(client, settings, project, task, window.video,
                                f"task {task}'s latest annotation has no brush mask")
    frames = TaskFrames(window.frames, loader)
    height, width = frames[window.seed].shape[:2]
    objects = {o.region_id: o for o in seed_objects(annotation, height, width, task)}
    if not objects:
        return _withdraw_source(client, settings, project, task, window.video,
                                f"task {task}'s brush regions are empty or unlabelled")
    engine = engine or _video_engine(settings)
    version = propagation_version(task, annotation.get("id", "?"), engine.config, engine.random_weights)
    # Job ids and inline threads are per task: a seed on another frame of this video may be
    # propagating now.  Read, upload and supersede under the video's lock, so the later of the two
    # reads the earlier one's predictions and supersedes them where both cover a frame.
    with propagation_video_lock(settings, project, window.video):
        existing = client.predictions(project)  # before ours: what may be superseded
        _progress(f"propagating {len(objects)} objects of task {task} over {len(window.frames) - 1} frames",
                  video=window.video)
        log.info("propagating task %s (project %s, video %s): %d objects, %d frames forward, %d backward", task,
                 project, window.video, len(objects), len(window.forward), len(window.backward))
        try:
            uploaded, scores, stopped = _track_and_upload(client, project, engine, frames, window, objects,
                                                          version, settings)
        except Exception:
            before = {int(p["id"]) for p in existing if p.get("id") is not None}
            _delete_failed_uploads(client, project, version, before)
            raise
        old = superseded(existing, set(uploaded), task)
        for prediction_id in old:
            client.delete_prediction(prediction_id)
    log.info("task %s propagated to %d frames (%d older predictions superseded)", task, len(uploaded), len(old))
    # A missing frame task (an import that skipped some) cuts the window short; the annotator
    # should hear it in the status, not find it in the window's details.
    gaps = [f"{side} propagation stopped early: {why}" for side, why in window.gaps.items()]
    return {
        **({"warning": "; ".join(gaps)} if gaps else {}),
        "status": "done", "annotation": annotation.get("id"), "video": window.video, "frame": seed.frame,
        "model_version": version, "predicted_tasks": uploaded,
        "scores": scores, "superseded": len(old), "objects": {k: o.label for k, o in objects.items()},
        "stopped_objects": stopped,
        "window": {"forward": len(window.forward), "backward": len(window.backward),
                   "forward_end": window.stopped_forward, "backward_end": window.stopped_backward},
    }


def _track_and_upload(
    client: LabelStudioClient, project: str, engine: VideoEngine, frames: TaskFrames, window: Window,
    objects: dict[str, SeedObject], version: str, settings: Settings,
) -> tuple[list[int], dict[int, float], list[dict[str, Any]]]:
    """Track the seed objects through the window and upload a prediction per frame, in batches:
    (predicted task ids, their scores, the objects that stopped and where)."""
    learning = settings.learning
    pending: list[dict] = []
    uploaded: list[int] = []
    scores: dict[int, float] = {}
    stopped: list[dict[str, Any]] = []
    batch = max(1, learning.pseudo_batch)
    tracked = engine.propagate(
        frames, window.seed, {o.region_id: o.mask for o in objects.values()}, len(window.forward),
        len(window.backward), learning.propagate_min_confidence, learning.propagate_offload_state,
    )
    # The generator holds the engine's lock while suspended: close it when the loop ends, also
    # when an upload raises, rather than whenever the garbage collector gets to it (the
    # exception's traceback keeps this frame, and so the generator, alive).
    with contextlib.closing(tracked):
        for frame in tracked:
            target = window.frames[frame.index]
            for region_id, track in frame.objects.items():
                if track.stopped:
                    stopped.append({"region": str(region_id), "label": objects[str(region_id)].label,
                                    "task": target.task_id, "frame": target.frame, "distance": frame.distance,
                                    "reason": track.stopped})
            pending.append(frame_prediction(frame, target.task_id, objects, version))
            scores[target.task_id] = round(frame.score, 4)
            if len(pending) >= batch:
                uploaded += _upload(client, project, pending)
            _progress(f"{len(uploaded) + len(pending)} frames predicted", frame=target.frame)
    uploaded += _upload(client, project, pending)
    return uploaded, scores, stopped


def _delete_failed_uploads(client: LabelStudioClient, project: str, version: str, before: set[int]) -> None:
    """Delete the predictions a failed run uploaded (those with its model_version that were not
    there before it), so the annotator sees the older propagation whole, not half of each.  A
    batch whose upload raised may still have been stored, hence a fresh read rather than the list
    of uploaded tasks.  Best effort: the job's own error is the one to report."""
    try:
        ours = [int(p["id"]) for p in client.predictions(project)
                if p.get("model_version") == version and p.get("id") is not None and int(p["id"]) not in before]
        for prediction_id in ours:
            client.delete_prediction(prediction_id)
    except Exception:
        log.warning("could not delete the predictions of the failed propagation %r", version, exc_info=True)
        return
    if ours:
        log.info("failed propagation %r: its %d uploaded predictions deleted", version, len(ours))


def _withdraw_source(client: LabelStudioClient, settings: Settings, project: str, task: int, video: str,
                     reason: str) -> dict[str, Any]:
    """The task has no masks to propagate any more (removed, or the annotation skipped): its earlier
    propagations would go on suggesting the removed objects on the neighbouring frames, so they go."""
    with propagation_video_lock(settings, project, video):
        old = superseded(client.predictions(project), set(), task)
        for prediction_id in old:
            client.delete_prediction(prediction_id)
    if not old:
        return {"status": "skipped", "reason": reason, "video": video}
    log.info("task %s has no masks now: its %d propagated predictions deleted", task, len(old))
    return {"status": "withdrawn", "reason": f"{reason}; its {len(old)} propagated predictions were deleted",
            "video": video, "withdrawn": len(old)}


def _upload(client: LabelStudioClient, project: str, pending: list[dict]) -> list[int]:
    if not pending:
        return []
    client.import_predictions(project, pending)
    done = [p["task"] for p in pending]
    pending.clear()
    return done
