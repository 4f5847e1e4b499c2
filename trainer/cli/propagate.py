"""``rpsam2-propagate``: a frame's masks through a folder of video frames, with SAM2's video predictor.

Example (masks of two instruments on frame 12, the next 50 frames and the 50 before)::

    rpsam2-propagate --frames /data/case_5013/img --start case5013_12.png \\
        --mask "Slit Knife=masks/knife.png" --mask Gauge=masks/gauge.png \\
        --count 50 --backward --out runs/propagate/case5013 \\
        --sam2-config configs/sam2.1/sam2.1_hiera_l.yaml --sam2-checkpoint checkpoints/sam2.1_hiera_large.pt

Writes ``OUT/<frame stem>/<LABEL>.png`` for each tracked frame and ``OUT/propagation.json``
(confidences, where objects stopped).  The layout and the confidence rule: ``trainer.video.folder``
and ``rpsam2_backend.engine.video.tracker``.  Input mistakes exit with status 2 and one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from trainer.cli.common import UsageError, add_sam2_arguments, build_video_engine, run_cli

PROG = "rpsam2-propagate"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Propagate masks of one frame through the following (and preceding) frames of a folder "
        "with SAM2's video predictor; frames are sorted by name (numbers as numbers).",
    )
    p.add_argument("--frames", required=True, help="folder of frame images (png, jpg, ...) of one video")
    p.add_argument("--mask", action="append", default=[], metavar="LABEL=PATH",
                   help="a mask of the start frame (nonzero = object) and its label; repeat for more objects")
    p.add_argument("--start", required=True, help="the frame file (name or stem) the masks belong to")
    p.add_argument("--count", type=int, required=True, help="frames to propagate after the start frame")
    p.add_argument("--backward", action="store_true", help="also propagate --count frames before the start frame")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="stop an object below this confidence (default RPSAM2_PROPAGATE_MIN_CONFIDENCE, 0.3)")
    p.add_argument("--offload-state", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the tracker's per-frame memories on the CPU, for long videos on a small GPU "
                   "(default RPSAM2_PROPAGATE_OFFLOAD_STATE)")
    p.add_argument("--out", required=True, help="output folder: OUT/<frame stem>/<LABEL>.png")
    add_sam2_arguments(p.add_argument_group("model"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_masks(items: Sequence[str]) -> dict[str, Path]:
    if not items:
        raise UsageError("give at least one --mask LABEL=PATH")
    masks: dict[str, Path] = {}
    for item in items:
        label, sep, path = item.partition("=")
        label = label.strip()
        if not sep or not label or not path.strip():
            raise UsageError(f"--mask {item!r}: expected LABEL=PATH")
        if "/" in label or "\\" in label or label in (".", ".."):
            raise UsageError(f"--mask {item!r}: the label names an output file and cannot contain '/'")
        if label in masks:
            raise UsageError(f"--mask: label {label!r} is given twice")
        if not Path(path).is_file():
            raise UsageError(f"--mask {item!r}: {path} does not exist")
        masks[label] = Path(path)
    return masks


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from tqdm import tqdm

    from rpsam2_backend.core.errors import BackendError, ConfigError
    from trainer.cli.common import model_settings
    from trainer.video.folder import list_frames, propagate_folder

    if args.count < 1:
        raise UsageError("--count must be >= 1")
    masks = parse_masks(args.mask)
    try:
        paths = list_frames(args.frames)
    except FileNotFoundError as exc:
        raise UsageError(f"--frames: {exc}") from exc
    names, stems = [p.name for p in paths], [p.stem for p in paths]
    if args.start not in names and args.start not in stems:
        raise UsageError(f"--start {args.start!r} is not a frame of {args.frames} ({len(paths)} frames: "
                         f"{names[0]} ... {names[-1]})")
    try:
        settings = model_settings(args)
        min_confidence = settings.learning.propagate_min_confidence if args.min_confidence is None \
            else args.min_confidence
        if not 0.0 <= min_confidence <= 1.0:
            raise UsageError("--min-confidence must be between 0 and 1")
        offload_state = settings.learning.propagate_offload_state if args.offload_state is None \
            else args.offload_state
        engine = build_video_engine(args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    seed = names.index(args.start) if args.start in names else stems.index(args.start)
    total = min(args.count, len(paths) - 1 - seed) + (min(args.count, seed) if args.backward else 0)
    with tqdm(total=total, desc="propagate", unit="frame", disable=args.no_progress) as bar:
        try:
            result = propagate_folder(engine, args.frames, masks, args.start, args.count, args.out,
                                      backward=args.backward, min_confidence=min_confidence, progress=bar.update,
                                      offload_state=offload_state)
        except (ValueError, FileNotFoundError, BackendError) as exc:
            raise UsageError(getattr(exc, "message", None) or str(exc)) from exc
    stopped = [f"{label} at {f['frame']} ({o['stopped']})" for f in result.frames
               for label, o in f["objects"].items() if o["stopped"]]
    print(f"{len(result.frames)} frames, {len(result.written)} masks written to {args.out}")
    if stopped:
        print("stopped: " + "; ".join(stopped))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
