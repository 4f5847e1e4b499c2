"""Propagation on a folder of frame files: what ``rpsam2-propagate`` runs, the job's path offline.

Frames are the image files of one folder (png, jpg, jpeg, bmp, tif), sorted by name with numbers
compared as numbers (``frame_2`` before ``frame_10``), read one at a time as the tracker reaches
them.  Masks are images of the start frame's size (nonzero = object), one per label.  Output:
``OUT/<frame stem>/<LABEL>.png`` (0/255) for every frame and object tracked (an object that stops
has files up to the frame where it stopped), plus ``OUT/propagation.json`` with each frame's
objects, confidences and why objects stopped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rpsam2_backend.engine.video.tracker import VideoEngine
from trainer.datasets.base import read_rgb

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUMMARY_FILE = "propagation.json"


def natural_key(name: str) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part)


def list_frames(folder: str | Path) -> list[Path]:
    """The frame files of ``folder``, in name order (numbers compared as numbers)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frames folder {folder} does not exist")
    frames = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    if not frames:
        raise FileNotFoundError(f"frames folder {folder} holds no image ({', '.join(FRAME_SUFFIXES)})")
    return sorted(frames, key=lambda p: natural_key(p.name))


class FolderFrames(Sequence[np.ndarray]):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        return read_rgb(self.paths[index])


def read_mask(path: str | Path, height: int, width: int) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise FileNotFoundError(f"cannot read mask {path} (missing or not an image)")
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != (height, width):
        raise ValueError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but the start frame is {width}x{height}")
    if not mask.any():
        raise ValueError(f"mask {path} is empty: nothing to propagate")
    return mask != 0


@dataclass
class FolderResult:
    written: list[Path] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)


def propagate_folder(
    engine: VideoEngine,
    frames_dir: str | Path,
    masks: dict[str, str | Path],
    start: str,
    count: int,
    out_dir: str | Path,
    backward: bool = False,
    min_confidence: float = 0.0,
    progress: Callable[[int], Any] | None = None,
    offload_state: bool = False,
) -> FolderResult:
    """Propagate ``masks`` (label -> mask file) from frame file ``start`` over ``count`` frames."""
    paths = list_frames(frames_dir)
    names = [p.name for p in paths]
    if start not in names:
        stems = [p.stem for p in paths]
        if start not in stems:
            raise ValueError(f"start frame {start!r} is not a frame of {frames_dir} "
                             f"(first frames: {', '.join(names[:3])})")
        start = names[stems.index(start)]
    seed = names.index(start)
    frames = FolderFrames(paths)
    height, width = frames[seed].shape[:2]
    seeds = {label: read_mask(path, height, width) for label, path in masks.items()}
    out = Path(out_dir)
    result = FolderResult()
    for frame in engine.propagate(frames, seed, seeds, forward=count, backward=count if backward else 0,
                                  min_confidence=min_confidence, offload_state=offload_state):
        folder = out / paths[frame.index].stem
        folder.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {"frame": paths[frame.index].name, "distance": frame.distance,
                                 "score": frame.score, "objects": {}}
        for label, track in frame.objects.items():
            target = folder / f"{label}.png"
            if not cv2.imwrite(str(target), track.mask.astype(np.uint8) * 255):
                raise OSError(f"cannot write {target}")
            result.written.append(target)
            entry["objects"][label] = {"confidence": track.confidence, "object_score": track.object_score,
                                       "iou": track.iou, "area": track.area, "stopped": track.stopped}
        result.frames.append(entry)
        if progress:
            progress(1)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"frames_dir": str(Path(frames_dir).resolve()), "start": start, "count": count,
               "backward": backward, "min_confidence": min_confidence, "frames": result.frames}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return result
