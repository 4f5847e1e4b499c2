"""Which Label Studio image tasks are frames of one video, and in what order.

A task is frame ``F`` of video ``V`` when:

1. its data carries both keys ``RPSAM2_VIDEO_KEY`` (default ``video``, any value, compared as
   text) and ``RPSAM2_FRAME_KEY`` (default ``frame``, an integer, or text of one); or else
2. its image file name says so (the basename, so that Label Studio's upload prefix
   ``/data/upload/<project>/<8 hex>-<name>`` does not matter):
   - Cataract-1K ``case5013_01.png`` -> video ``case5013``, frame 1;
   - CaDIS ``Video01/Images/Video1_frame000090.png`` (or an upload of ``Video1_frame000090.png``)
     -> video ``Video01``, frame 90; any ``..._frameNNNN`` file under a ``VideoNN`` folder too.

Frame numbers need not be consecutive: a video's *step* is the smallest difference between its
frame numbers (1 for numbered frames, 90 for frames sampled every 90th), and a larger difference
is a **gap** (missing frames).  Propagation never crosses a gap: the tracker would jump over
motion it has not seen, so it stops there and says so (``Window.stopped_forward``).  Given an
``annotated`` test, the window also ends before the next frame a person labelled: their labels
are a better seed than anything tracked through them, and such a frame gets no prediction anyway.

Everything here is pure (task dicts in, dataclasses out) and raises ``VideoFrameError`` (HTTP 422)
with the task id and the offending value for input it cannot use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from rpsam2_backend.core.errors import BackendError

_IMAGE = r"\.(?:png|jpe?g|bmp|tiff?)$"
_CATARACT1K = re.compile(r"(?:^|[-_ ])(case_?\d+)_(\d+)" + _IMAGE, re.IGNORECASE)
_CADIS_FILE = re.compile(r"(?:^|[-_ ])video_?(\d+)_frame(\d+)" + _IMAGE, re.IGNORECASE)
_VIDEO_DIR = re.compile(r"^video_?(\d+)$", re.IGNORECASE)
_FRAME_FILE = re.compile(r"_frame(\d+)" + _IMAGE, re.IGNORECASE)


class VideoFrameError(BackendError):
    """A task's video/frame information cannot be used (missing, not an integer, ambiguous)."""

    status = 422


_GAP_STOP = "gap in the frame numbers"  # how a window that stopped at a missing frame says so


@dataclass(frozen=True)
class FrameRef:
    video: str
    frame: int


@dataclass(frozen=True)
class FrameTask:
    task_id: int
    video: str
    frame: int
    image_url: str
    task: dict[str, Any]


@dataclass(frozen=True)
class Window:
    """The frames a propagation from ``frames[seed]`` may visit: contiguous (no gap), in frame order."""

    video: str
    frames: list[FrameTask]
    seed: int  # index of the seed frame in ``frames``
    step: int
    stopped_forward: str  # why the window ends after the seed (reached N, end of video, a gap, a labelled frame)
    stopped_backward: str

    @property
    def forward(self) -> list[FrameTask]:
        return self.frames[self.seed + 1 :]

    @property
    def backward(self) -> list[FrameTask]:
        """Frames before the seed, nearest first."""
        return self.frames[: self.seed][::-1]

    @property
    def gaps(self) -> dict[str, str]:
        """The sides ("forward", "backward") that ended at a gap in the frame numbers, with why."""
        ends = (("forward", self.stopped_forward), ("backward", self.stopped_backward))
        return {side: why for side, why in ends if why.startswith(_GAP_STOP)}


def _basename_and_dirs(url: str) -> tuple[str, list[str]]:
    """The file name and folders of an image URL (Label Studio local-files URLs keep it in ?d=)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "", []
    path = unquote(parts.path)
    if "local-files" in path and parts.query:
        path = (parse_qs(parts.query).get("d") or [path])[0]
    pieces = [p for p in re.split(r"[\\/]+", path) if p]
    return (pieces[-1], pieces[:-1]) if pieces else ("", [])


def frame_from_file_name(url: str) -> FrameRef | None:
    """Video and frame of a Cataract-1K or CaDIS image path/URL, None when the name says neither."""
    name, dirs = _basename_and_dirs(url)
    match = _CADIS_FILE.search(name)
    if match:
        return FrameRef(f"Video{int(match.group(1)):02d}", int(match.group(2)))
    frame = _FRAME_FILE.search(name)
    video_dirs = [m for m in (_VIDEO_DIR.match(d) for d in dirs) if m]
    if frame and video_dirs:
        return FrameRef(f"Video{int(video_dirs[-1].group(1)):02d}", int(frame.group(1)))
    match = _CATARACT1K.search(name)
    if match:
        return FrameRef(match.group(1).replace("_", "").lower(), int(match.group(2)))
    return None


def _frame_number(task_id: Any, key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise VideoFrameError(f"task {task_id}: data[{key!r}]={value!r} is not an integer frame number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise VideoFrameError(f"task {task_id}: data[{key!r}]={value!r} is not an integer frame number")


def frame_of(
    task: dict[str, Any], video_key: str = "video", frame_key: str = "frame", image_url: str | None = None
) -> FrameRef | None:
    """The task's video and frame (rules in the module docstring), None when it is no video frame.

    ``image_url`` is the task's image (``labelstudio.tasks.image_url``); without it every text
    value of the task data is tried as a file name.  Raises VideoFrameError when the data keys are
    there but unusable (a video without a frame, a frame that is not an integer).
    """
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        return None
    task_id = task.get("id")
    has_video = data.get(video_key) not in (None, "")
    has_frame = data.get(frame_key) not in (None, "")
    if has_video and has_frame:
        return FrameRef(str(data[video_key]), _frame_number(task_id, frame_key, data[frame_key]))
    if has_video != has_frame:
        there, missing = (video_key, frame_key) if has_video else (frame_key, video_key)
        raise VideoFrameError(
            f"task {task_id} has data[{there!r}] but no data[{missing!r}]: a video frame needs both "
            f"(RPSAM2_VIDEO_KEY / RPSAM2_FRAME_KEY)"
        )
    candidates = [image_url] if image_url else [v for v in data.values() if isinstance(v, str)]
    for url in candidates:
        ref = frame_from_file_name(url)
        if ref is not None:
            return ref
    return None


def frame_or_none(
    task: dict[str, Any], video_key: str = "video", frame_key: str = "frame", image_url: str | None = None
) -> FrameRef | None:
    """``frame_of``, but None also for unusable frame data: callers that only group by video (the
    retrain's split) must not fail on a task they could not propagate from."""
    try:
        return frame_of(task, video_key, frame_key, image_url)
    except VideoFrameError:
        return None


def video_step(frames: Iterable[int]) -> int:
    """The smallest difference between the distinct, sorted frame numbers (1 for a single frame)."""
    ordered = sorted(set(frames))
    diffs = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    return min(diffs) if diffs else 1


def video_tasks(
    tasks: Iterable[dict[str, Any]],
    video: str,
    video_key: str = "video",
    frame_key: str = "frame",
    image_url_of: Callable[[dict[str, Any]], str | None] | None = None,
) -> list[FrameTask]:
    """The frames of ``video`` among ``tasks``, sorted by frame number.

    Raises VideoFrameError when two tasks claim the same frame of it (which one to show?)."""
    found: dict[int, FrameTask] = {}
    for task in tasks:
        url = image_url_of(task) if image_url_of else None
        try:
            ref = frame_of(task, video_key, frame_key, url)
        except VideoFrameError:
            continue  # another video's broken task must not stop this one
        if ref is None or ref.video != video:
            continue
        item = FrameTask(int(task["id"]), ref.video, ref.frame, url or "", task)
        if ref.frame in found:
            raise VideoFrameError(
                f"tasks {found[ref.frame].task_id} and {item.task_id} are both frame {ref.frame} of video "
                f"{video!r}: remove one, or fix data[{frame_key!r}]"
            )
        found[ref.frame] = item
    return [found[f] for f in sorted(found)]


def _walk(
    frames: list[FrameTask], seed: int, direction: int, count: int, step: int,
    annotated: Callable[[dict[str, Any]], bool] | None,
) -> tuple[int, str]:
    """How many frames from the seed in ``direction`` the window takes, and why it stops there."""
    taken = 0
    while taken < count:
        index = seed + direction * (taken + 1)
        if not 0 <= index < len(frames):
            return taken, "end of the video"
        previous = frames[index - direction]
        if abs(frames[index].frame - previous.frame) != step:
            return taken, (f"{_GAP_STOP} after frame {previous.frame} (next is frame "
                           f"{frames[index].frame}, step {step})")
        if annotated is not None and annotated(frames[index].task):
            return taken, f"frame {frames[index].frame} (task {frames[index].task_id}) is labelled"
        taken += 1
    return taken, f"reached {count} frames" if count else "not asked"


def propagation_window(
    tasks: list[dict[str, Any]],
    seed_task_id: int,
    forward: int,
    backward: int = 0,
    video_key: str = "video",
    frame_key: str = "frame",
    image_url_of: Callable[[dict[str, Any]], str | None] | None = None,
    annotated: Callable[[dict[str, Any]], bool] | None = None,
) -> Window:
    """The frames around task ``seed_task_id`` a propagation of ``forward`` / ``backward`` frames
    visits, stopping early at the end of the video, at a gap or before a task ``annotated`` says
    a person labelled (module docstring)."""
    if forward < 0 or backward < 0:
        raise ValueError("forward and backward must be >= 0")
    seed_task = next((t for t in tasks if isinstance(t, dict) and str(t.get("id")) == str(seed_task_id)), None)
    if seed_task is None:
        raise VideoFrameError(f"task {seed_task_id} is not in the project's tasks", status=404)
    ref = frame_of(seed_task, video_key, frame_key, image_url_of(seed_task) if image_url_of else None)
    if ref is None:
        raise VideoFrameError(
            f"task {seed_task_id} is not a frame of a known video: give its data {video_key!r} and "
            f"{frame_key!r} (RPSAM2_VIDEO_KEY / RPSAM2_FRAME_KEY), or name its image like Cataract-1K "
            f"(case5013_01.png) or CaDIS (Video1_frame000090.png)"
        )
    frames = video_tasks(tasks, ref.video, video_key, frame_key, image_url_of)
    seed = next(i for i, f in enumerate(frames) if f.task_id == int(seed_task_id))
    step = video_step(f.frame for f in frames)
    after, why_after = _walk(frames, seed, +1, forward, step, annotated)
    before, why_before = _walk(frames, seed, -1, backward, step, annotated)
    return Window(ref.video, frames[seed - before : seed + after + 1], before, step, why_after, why_before)
