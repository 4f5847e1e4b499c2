"""Accepted labels of a Label Studio project, pulled over its REST API (what label-studio-sdk wraps).

The rule (which annotation of a task is a training label):

1. Cancelled annotations ("skipped", ``was_cancelled``) never count.
2. Review: when any annotation of the project carries review data (Label Studio Enterprise:
   ``reviews``, ``review_result``, or a ``last_action`` of accepted/rejected), the project is
   reviewed and only annotations whose latest review accepted them count.  Without review data
   (Community edition), submitting an annotation is accepting it.
3. Per task, the latest counted annotation wins (greatest ``updated_at``, then ``created_at``,
   then id); earlier ones of the same task are ignored, even when the latest has no mask.
4. The winner with brush regions (RLE ``brushlabels`` with a label) is an *accepted mask*: one
   object per region id, class = its first label.  A winner with keypoints but no brush region
   is a *click-only* task: the pseudo-label step may suggest a mask for it.  Anything else is
   ignored.  Predictions are never read as labels.

Images are fetched through ``rpsam2_backend.labelstudio.images.ImageLoader`` (the backend's own
safe loader, with ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import requests

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.labelstudio.images import ImageLoader
from rpsam2_backend.labelstudio.label_config import LabelConfig, parse_label_config
from rpsam2_backend.labelstudio.tasks import image_url
from rpsam2_backend.labelstudio.video_frames import frame_or_none
from trainer.datasets.base import Dataset, Sample
from trainer.datasets.labelstudio_export import _timestamp, brush_objects
from trainer.prompts import stable_hash

log = logging.getLogger(__name__)

ACCEPTED_ACTIONS = ("accepted", "fixed_and_accepted")
REVIEW_ACTIONS = (*ACCEPTED_ACTIONS, "rejected")


class LabelStudioUnavailable(RuntimeError):
    pass


@dataclass
class TaskLabel:
    task_id: int
    image_url: str
    annotation_id: int
    annotation: dict
    video: str | None = None  # the video the task is a frame of (labelstudio.video_frames), if any
    frame: int | None = None  # its frame number in that video


@dataclass
class ProjectLabels:
    project: str
    label_config: LabelConfig
    accepted: list[TaskLabel] = field(default_factory=list)  # latest counted annotation has masks
    click_only: list[TaskLabel] = field(default_factory=list)  # ... has keypoints, no mask
    predictions: dict[int, set[str]] = field(default_factory=dict)  # task id -> model versions
    reviewed: bool = False

    @property
    def annotation_ids(self) -> list[int]:
        return sorted(t.annotation_id for t in self.accepted)


# ------------------------------------------------------------------------------------ the rule


def has_review_data(annotation: dict) -> bool:
    return bool(annotation.get("reviews")) or annotation.get("review_result") is not None or (
        annotation.get("last_action") in REVIEW_ACTIONS
    )


def review_accepted(annotation: dict) -> bool:
    reviews = [r for r in annotation.get("reviews") or [] if isinstance(r, dict)]
    if reviews:
        latest = max(reviews, key=lambda r: (_timestamp(r.get("created_at") or r.get("updated_at")), r.get("id") or 0))
        return bool(latest.get("accepted"))
    result = annotation.get("review_result")
    if result is not None:
        return result in (True, "accepted", *ACCEPTED_ACTIONS)
    return annotation.get("last_action") in ACCEPTED_ACTIONS


def winning_annotation(task: dict, reviewed: bool) -> dict | None:
    counted = [
        a for a in task.get("annotations") or []
        if isinstance(a, dict) and not a.get("was_cancelled") and (not reviewed or review_accepted(a))
    ]
    if not counted:
        return None
    return max(counted, key=lambda a: (_timestamp(a.get("updated_at")), _timestamp(a.get("created_at")),
                                       a.get("id") or 0))


def _kinds(annotation: dict) -> set[str]:
    return {item.get("type") for item in annotation.get("result") or [] if isinstance(item, dict)}


def annotated_image(task: dict, annotation: dict, config: LabelConfig) -> str | None:
    """The URL of the image the annotation was drawn on (its results' to_name), None without one."""
    to_name = next((item["to_name"] for item in annotation.get("result") or []
                    if isinstance(item, dict) and isinstance(item.get("to_name"), str)), None)
    try:
        return image_url(task, config, to_name)
    except BadRequest:
        return None


def classify_tasks(
    project: str, tasks: list[dict], config: LabelConfig, video_keys: tuple[str, str] = ("video", "frame")
) -> ProjectLabels:
    """Apply the rule of the module docstring to an export (a list of tasks with annotations).

    ``video_keys`` (RPSAM2_VIDEO_KEY, RPSAM2_FRAME_KEY) say which tasks are frames of one video."""
    reviewed = any(has_review_data(a) for t in tasks for a in t.get("annotations") or [] if isinstance(a, dict))
    labels = ProjectLabels(project, config, reviewed=reviewed)
    for task in tasks:
        winner = winning_annotation(task, reviewed)
        url = annotated_image(task, winner, config) if winner is not None else None
        if winner is None or url is None:
            continue
        ref = frame_or_none(task, video_keys[0], video_keys[1], url)
        item = TaskLabel(int(task["id"]), url, int(winner.get("id") or 0), winner,
                         ref.video if ref else None, ref.frame if ref else None)
        kinds = _kinds(winner)
        if "brushlabels" in kinds and brush_objects(winner):
            labels.accepted.append(item)
        elif "keypointlabels" in kinds:
            labels.click_only.append(item)
    labels.accepted.sort(key=lambda t: t.task_id)
    labels.click_only.sort(key=lambda t: t.task_id)
    return labels


# ------------------------------------------------------------------------------------ the client


class LabelStudioClient:
    """The few REST calls the learning loop makes; every failure names the call."""

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        if not url:
            raise LabelStudioUnavailable(
                "LABEL_STUDIO_URL is not set (and no /setup announced a host): the learning loop's jobs "
                "(retrain, propagation) cannot read the project's tasks"
            )
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Token {token}"
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelStudioClient:
        return cls(settings.label_studio.url, settings.label_studio.api_key)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, f"{self.url}{path}", **kwargs)
        except requests.RequestException as exc:
            raise LabelStudioUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise LabelStudioUnavailable(f"{method} {path} -> HTTP {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def label_config(self, project: str) -> str:
        return self.request("GET", f"/api/projects/{project}")["label_config"]

    def export_tasks(self, project: str) -> list[dict]:
        tasks = self.request("GET", f"/api/projects/{project}/export", params={"exportType": "JSON"})
        if not isinstance(tasks, list):
            raise LabelStudioUnavailable(f"export of project {project} is not a list of tasks")
        return tasks

    def all_tasks(self, project: str) -> list[dict]:
        """Every task with its annotations, labelled or not (the export alone skips unlabelled ones)."""
        tasks = self.request("GET", f"/api/projects/{project}/export",
                             params={"exportType": "JSON", "download_all_tasks": "true"})
        if not isinstance(tasks, list):
            raise LabelStudioUnavailable(f"export of project {project} is not a list of tasks")
        return tasks

    def predictions(self, project: str) -> list[dict]:
        """The project's predictions (id, task, model_version, score, result)."""
        found = self.request("GET", "/api/predictions", params={"project": project}) or []
        if not isinstance(found, list):
            raise LabelStudioUnavailable(f"predictions of project {project} are not a list")
        return found

    def prediction_versions(self, project: str) -> dict[int, set[str]]:
        found: dict[int, set[str]] = {}
        for pred in self.predictions(project):
            found.setdefault(int(pred["task"]), set()).add(str(pred.get("model_version") or ""))
        return found

    def import_predictions(self, project: str, predictions: list[dict]) -> None:
        self.request("POST", f"/api/projects/{project}/import/predictions", json=predictions)

    def delete_prediction(self, prediction_id: int) -> None:
        self.request("DELETE", f"/api/predictions/{int(prediction_id)}/")


def fetch_project_labels(
    client: LabelStudioClient, project: str, video_keys: tuple[str, str] = ("video", "frame")
) -> ProjectLabels:
    config = parse_label_config(client.label_config(project))
    labels = classify_tasks(project, client.export_tasks(project), config, video_keys)
    labels.predictions = client.prediction_versions(project)
    log.info(
        "project %s: %d accepted masks, %d click-only tasks%s", project, len(labels.accepted),
        len(labels.click_only), " (reviewed project: accepted reviews only)" if labels.reviewed else "",
    )
    return labels


def to_dataset(items: list[TaskLabel], loader: ImageLoader, name: str) -> Dataset:
    samples = [
        Sample(
            image_path=t.image_url,
            objects=brush_objects(t.annotation),
            sample_id=f"task-{t.task_id}",
            image_loader=lambda url=t.image_url: loader.load(url).rgb,
            meta={"task_id": t.task_id, "annotation_id": t.annotation_id},
        )
        for t in items
    ]
    return Dataset(samples, name=name)


def split_train_val(items: list[TaskLabel], val_fraction: float) -> tuple[list[TaskLabel], list[TaskLabel]]:
    """Deterministic split by task id, or by video for frames of one: a task (a video) stays on its
    side as the project grows, and neighbouring frames of one video, near-identical, never sit on
    both sides.

    A group (a video, or a task that is no video frame) is in validation when a stable hash of its
    key falls below ``val_fraction``; at least one group goes to each side when there are two or
    more.  A task with no video keeps the hash of its id, so projects without videos split as before.
    A project whose labels are all frames of one video (the usual start of video labelling) cannot
    hold a video out: its last frames validate instead, one contiguous block, so only the two frames
    at the boundary are neighbours across the split.
    """
    def key(t: TaskLabel) -> Any:
        return ("rpsam2-val-video", t.video) if t.video is not None else ("rpsam2-val", t.task_id)

    groups = sorted({key(t) for t in items}, key=stable_hash)
    if len(groups) == 1 and len(items) >= 2 and items[0].video is not None:
        return _split_one_video(items, val_fraction)
    val_keys = {k for k in groups if stable_hash(k) / 2**63 < val_fraction}
    if len(groups) >= 2:
        if not val_keys:
            val_keys = {groups[0]}
        if len(val_keys) == len(groups):
            val_keys.discard(groups[-1])
    train = [t for t in items if key(t) not in val_keys]
    val = [t for t in items if key(t) in val_keys]
    return train, val


def _split_one_video(items: list[TaskLabel], val_fraction: float) -> tuple[list[TaskLabel], list[TaskLabel]]:
    ordered = sorted(items, key=lambda t: (t.frame if t.frame is not None else -1, t.task_id))
    n_val = min(len(ordered) - 1, max(1, math.ceil(val_fraction * len(ordered))))
    cut = len(ordered) - n_val
    return ordered[:cut], ordered[cut:]
