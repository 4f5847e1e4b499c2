"""``rpsam2-eval --video``: how well a seed frame's masks survive propagation, per distance.

Protocol (our choice; the paper evaluates single frames only):

- Videos and frames come from the dataset's file names (``labelstudio.video_frames``: Cataract-1K
  ``case5013_01.png``, CaDIS ``Video1_frame000090.png``); samples whose names say neither are
  left out.  A video is cut into runs at gaps in its frame numbers (propagation never crosses one).
- Objects are classes (the loaders merge instruments per class).  Each class is seeded on the
  first frame of a run that has it, and tracked forward up to ``max_distance`` frames with SAM2's
  video predictor (all classes seeded on one frame in one propagation; stopping on low confidence
  is off, SAM2's own "lost" still ends an object, whose later frames then count as empty).
- Seeds, one column each:
  ``sam2``       the ground-truth mask of the seed frame (SAM2 alone, semi-supervised VOS);
  ``sam2-click`` the mask plain SAM2 decodes from one random click inside the ground truth;
  ``rpsam2``     the mask decoded from the same click refined by the shift block (the RP-SAM2 seed).
  Clicks follow the paper's prompts: ``seeds`` random points per object (one per prompt seed,
  ``trainer.prompts``), the same for both click columns.
- Every later frame of the run where the class is in the ground truth is scored (Dice, HD95 with
  ``trainer.scores``' empty-mask policy); frames without it are not scored.
- Per distance d: the mean over tracks for each prompt seed, then mean ± std across prompt seeds
  (the paper's aggregation); the mask seed has one prompt (std 0).

Outputs in ``out_dir``: ``video_scores.csv`` (one row per method, prompt, track and frame),
``video_report.md`` (table per distance) and ``video_summary.json``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
from rpsam2_backend.engine.predictor import PixelClick, RPSAM2Predictor
from rpsam2_backend.engine.sam2_engine import SAM2Engine
from rpsam2_backend.engine.video.tracker import VideoEngine
from rpsam2_backend.labelstudio.video_frames import frame_from_file_name, video_step
from trainer.datasets.base import Dataset, Sample
from trainer.prompts import sample_points, stable_hash
from trainer.scores import dice, hd95

log = logging.getLogger(__name__)

MASK, CLICK = "mask", "click"


@dataclass(frozen=True)
class VideoMethod:
    label: str
    seed: str  # MASK or CLICK
    shift_block: ShiftBlock | None = None


@dataclass
class VideoScore:
    method: str
    prompt: int
    video: str
    class_name: str
    seed_frame: int
    frame: int
    distance: int
    dice: float
    hd95: float
    empty_pred: bool


@dataclass
class VideoResult:
    rows: list[VideoScore] = field(default_factory=list)
    table: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)  # method -> d -> numbers
    report_path: Path | None = None
    scores_path: Path | None = None
    summary_path: Path | None = None


def video_runs(dataset: Dataset) -> dict[str, list[list[tuple[int, Sample]]]]:
    """video -> its runs of (frame number, sample), each run without a gap, in frame order."""
    by_video: dict[str, dict[int, Sample]] = defaultdict(dict)
    skipped = 0
    for sample in dataset:
        ref = frame_from_file_name(str(sample.image_path))
        if ref is None:
            skipped += 1
            continue
        by_video[ref.video][ref.frame] = sample
    if skipped:
        log.warning("video evaluation: %d samples are no video frames (by file name); left out", skipped)
    runs: dict[str, list[list[tuple[int, Sample]]]] = {}
    for video, frames in sorted(by_video.items()):
        order = sorted(frames)
        step = video_step(order)
        current: list[tuple[int, Sample]] = []
        runs[video] = []
        for number in order:
            if current and number - current[-1][0] != step:
                runs[video].append(current)
                current = []
            current.append((number, frames[number]))
        runs[video].append(current)
    return runs


def class_masks(sample: Sample) -> dict[str, np.ndarray]:
    """class name -> union of its objects' masks."""
    out: dict[str, np.ndarray] = {}
    for obj in sample.objects:
        mask = obj.load()
        out[obj.class_name] = out[obj.class_name] | mask if obj.class_name in out else mask
    return {k: v for k, v in out.items() if v.any()}


def seeds_of_run(run: list[tuple[int, Sample]]) -> dict[int, list[str]]:
    """position in the run -> classes first seen there (with a non-empty mask)."""
    seen: set[str] = set()
    out: dict[int, list[str]] = {}
    for position, (_, sample) in enumerate(run):
        # class_masks, not the object list: a class whose masks are empty here cannot be seeded
        # here (evaluate_video skips it), so it must stay unseen until a frame that has pixels.
        new = sorted(set(class_masks(sample)) - seen)
        if new:
            out[position] = new
            seen.update(new)
    return out


class _RunFrames:
    """The run's images, read when the tracker asks."""

    def __init__(self, run: list[tuple[int, Sample]]) -> None:
        self.run = run
        self._last: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.run)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._last is None or self._last[0] != index:
            self._last = (index, self.run[index][1].load_image())
        return self._last[1]


def evaluate_video(
    dataset: Dataset,
    image_engine: SAM2Engine,
    video_engine: VideoEngine,
    methods: dict[str, VideoMethod],
    max_distance: int,
    seeds: int,
    out_dir: str | Path,
    info: dict[str, Any] | None = None,
    progress: Callable[[Iterator[Any], int], Iterator[Any]] | None = None,
) -> VideoResult:
    runs = video_runs(dataset)
    work = [(video, run, position, classes) for video, video_runs_ in runs.items() for run in video_runs_
            for position, classes in seeds_of_run(run).items() if position + 1 < len(run)]
    if not work:
        raise ValueError("no video frames with an object and a following frame: name frames like "
                         "case5013_01.png (Cataract-1K) or Video1_frame000090.png (CaDIS)")
    result = VideoResult()
    items: Iterator[Any] = iter(work)
    if progress:
        items = progress(items, len(work))
    for video, run, position, classes in items:
        frames = _RunFrames(run)
        seed_image = frames[position]
        truth = class_masks(run[position][1])
        later = [class_masks(sample) for _, sample in run[position + 1 : position + 1 + max_distance]]
        for name, method in methods.items():
            prompts = [0] if method.seed == MASK else list(range(seeds))
            for prompt in prompts:
                starts = {c: truth[c] if method.seed == MASK else
                          _click_seed(image_engine, method.shift_block, seed_image, truth[c], prompt,
                                      (video, run[position][0], c))
                          for c in classes if c in truth}
                tracked = _track(video_engine, frames, position, starts, max_distance)
                for d, gts in enumerate(later, start=1):
                    for class_name in starts:
                        gt = gts.get(class_name)
                        if gt is None:
                            continue
                        pred = tracked.get(d, {}).get(class_name)
                        pred = np.zeros_like(gt) if pred is None else pred
                        result.rows.append(VideoScore(name, prompt, video, class_name, run[position][0],
                                                      run[position + d][0], d, dice(pred, gt), hd95(pred, gt),
                                                      not bool(pred.any())))
    result.table = aggregate(result.rows)
    _write(result, methods, Path(out_dir), max_distance, seeds, info or {})
    return result


def _click_seed(engine: SAM2Engine, block: ShiftBlock | None, image: np.ndarray, gt: np.ndarray, prompt: int,
                object_id: tuple) -> np.ndarray:
    x, y = sample_points(gt, np.random.default_rng([prompt, stable_hash(object_id)]), 1)[0] + 0.5
    return RPSAM2Predictor(engine, block).segment(image, [PixelClick(float(x), float(y))]).mask


def _track(engine: VideoEngine, frames: _RunFrames, position: int, starts: dict[str, np.ndarray],
           max_distance: int) -> dict[int, dict[str, np.ndarray]]:
    """distance -> class -> predicted mask; a seed that decoded to nothing is never tracked (empty)."""
    usable = {c: m for c, m in starts.items() if m.any()}
    if not usable:
        return {}
    out: dict[int, dict[str, np.ndarray]] = {}
    for frame in engine.propagate(frames, position, usable, forward=max_distance, min_confidence=0.0):
        out[frame.distance] = {str(c): t.mask for c, t in frame.objects.items()}
    return out


def aggregate(rows: list[VideoScore]) -> dict[str, dict[int, dict[str, float]]]:
    """method -> distance -> mdsc, mdsc_std, mhd95, mhd95_std, n (tracks scored), prompts."""
    per: dict[tuple[str, int, int], list[VideoScore]] = defaultdict(list)
    for row in rows:
        per[(row.method, row.distance, row.prompt)].append(row)
    table: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for method, distance in sorted({(m, d) for m, d, _ in per}):
        prompts = sorted(p for m, d, p in per if (m, d) == (method, distance))
        dsc = [float(np.mean([r.dice for r in per[(method, distance, p)]])) for p in prompts]
        hd = [float(np.mean([r.hd95 for r in per[(method, distance, p)]])) for p in prompts]
        table[method][distance] = {
            "mdsc": float(np.mean(dsc)), "mdsc_std": float(np.std(dsc)), "mhd95": float(np.mean(hd)),
            "mhd95_std": float(np.std(hd)), "n": len(per[(method, distance, prompts[0])]), "prompts": len(prompts),
        }
    return dict(table)


def _write(result: VideoResult, methods: dict[str, VideoMethod], out: Path, max_distance: int, seeds: int,
           info: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result.scores_path = out / "video_scores.csv"
    with result.scores_path.open("w", newline="") as handle:
        names = list(VideoScore.__dataclass_fields__)
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(asdict(r) for r in result.rows)
    lines = ["# Propagation from a seed frame (rpsam2-eval --video)", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- seeds: {', '.join(f'{n} = {m.label}' for n, m in methods.items())}",
              f"- prompts per object (click seeds): {seeds}; distances 1..{max_distance}; mean ± std across prompts",
              "", "| distance | " + " | ".join(f"{n} mDSC | {n} mHD95" for n in methods) + " | tracks |",
              "|---|" + "---|---|" * len(methods) + "---|"]
    for d in range(1, max_distance + 1):
        cells = []
        for name in methods:
            cell = result.table.get(name, {}).get(d)
            cells += ([f"{cell['mdsc'] * 100:.2f} ± {cell['mdsc_std'] * 100:.2f}",
                       f"{cell['mhd95']:.2f} ± {cell['mhd95_std']:.2f}"] if cell else ["-", "-"])
        counts = {int(c["n"]) for m in result.table.values() for dd, c in m.items() if dd == d}
        if any(c != "-" for c in cells):
            lines.append(f"| {d} | " + " | ".join(cells) + f" | {max(counts) if counts else 0} |")
    result.report_path = out / "video_report.md"
    result.report_path.write_text("\n".join(lines) + "\n")
    result.summary_path = out / "video_summary.json"
    summary = {"info": info, "methods": {n: m.label for n, m in methods.items()}, "max_distance": max_distance,
               "seeds": seeds, "table": {m: {str(d): c for d, c in t.items()} for m, t in result.table.items()}}
    result.summary_path.write_text(json.dumps(summary, indent=2))
