"""``rpsam2-train``: train a shift block on a dataset and write a checkpoint directory.

Example (Cataract-1K, the paper's settings, 50 epochs on a 20 % stratified subset)::

    rpsam2-train --data /data/cataract-1k --format cataract1k --out runs/shift-20pct \\
        --sam2-config configs/sam2.1/sam2.1_hiera_l.yaml --sam2-checkpoint checkpoints/sam2.1_hiera_large.pt \\
        --epochs 50 --fraction 0.2 --seed 0 --cache-dir ~/.cache/rpsam2

The output directory is what the backend loads with ``RPSAM2_SHIFT_CHECKPOINT=runs/shift-20pct``
(best weights + ``shift_block.json``), plus ``metrics.csv``, ``steps.csv``, ``curve.png``,
``training.json`` and ``resume.pt`` (``--resume runs/shift-20pct`` continues an interrupted run).

Splits: training uses ``--train-split`` (default ``train``) when the dataset has it, else every
sample outside the validation and ``test`` splits; validation uses ``--val-split`` (default
``val``) when present, else a stratified ``--val-fraction`` (default 0.2) carved out of the
training samples (0 disables validation; the last checkpoint is then kept).  ``--fraction`` then
keeps a stratified share of the training samples (the paper's 5-60 % subsets).

User mistakes (missing paths, bad values, no SAM2 checkpoint) end with exit status 2 and one line on
stderr, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from trainer.cli.common import UsageError, add_sam2_arguments, build_engine, run_cli
from trainer.datasets import FORMATS

PROG = "rpsam2-train"
DEFAULT_CACHE_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rpsam2")

log = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from exc
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train the RP-SAM2 shift block (paper §3.2) with frozen SAM2 and write a checkpoint "
        "directory the backend loads through RPSAM2_SHIFT_CHECKPOINT.",
    )
    data = p.add_argument_group("data")
    data.add_argument("--data", required=True, help="dataset root (a Label Studio export file for labelstudio)")
    data.add_argument("--format", required=True, choices=FORMATS, dest="fmt", help="dataset layout")
    data.add_argument("--train-split", default="train", help="split to train on when the dataset has it")
    data.add_argument("--val-split", default="val", help="split to validate on when the dataset has it")
    data.add_argument("--val-fraction", type=float, default=0.2,
                      help="without a validation split: stratified share of the training samples (0: none)")
    data.add_argument("--fraction", type=_fraction, default=None,
                      help="train on a stratified subset with this share of the training samples")
    data.add_argument("--fold", type=int, default=None, help="Cataract-1K fold of the split CSVs (default 0)")

    run = p.add_argument_group("training")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default 50)")
    length.add_argument("--steps", type=_positive_int, default=None, help="optimiser steps instead of epochs")
    run.add_argument("--out", required=True, help="output (checkpoint) directory")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--layers", type=_positive_int, default=6, help="point-to-image attention layers")
    run.add_argument("--batch-size", type=_positive_int, default=4, help="objects per step")
    run.add_argument("--points-per-object", type=_positive_int, default=10, help="random clicks per object per step")
    run.add_argument("--lr", type=_positive_float, default=1e-4)
    run.add_argument("--eps", type=float, default=0.005, help="candidate tolerance in Dice (0.005 = 0.5 %%)")
    run.add_argument("--grid-points", type=_positive_int, default=64, help="about this many grid points per object")
    run.add_argument("--val-seeds", type=int, default=3, help="single-click prompts per validation object")
    run.add_argument("--val-every", type=_positive_int, default=None, help="steps between validations (default: epoch)")
    run.add_argument("--resume", default=None, help="continue the run in this directory (its resume.pt)")
    run.add_argument("--init-from", default=None, help="start from this shift-block checkpoint directory")
    run.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")

    model = p.add_argument_group("SAM2")
    add_sam2_arguments(model)
    model.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR,
                       help=f"embedding + candidate cache (default {DEFAULT_CACHE_DIR}; 'none' for memory only)")
    model.add_argument("--feature-memory-mb", type=_positive_int, default=2048,
                       help="RAM for image embeddings (8 MB per image); the rest is read from --cache-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _load_data(args: argparse.Namespace):
    from trainer.datasets import load_dataset

    path = Path(args.data).expanduser()
    if not path.exists():
        raise UsageError(f"--data {path} does not exist")
    options = {}
    if args.fold is not None:
        if args.fmt != "cataract1k":
            raise UsageError("--fold applies to --format cataract1k only")
        options["fold"] = args.fold
    try:
        dataset = load_dataset(path, args.fmt, None, **options)
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        raise UsageError(f"cannot load {args.fmt} data from {path}: {exc}") from exc

    if args.train_split in dataset.splits:
        train, train_how = dataset.split(args.train_split), f"split {args.train_split!r}"
    else:  # everything but the held-out splits: never train on validation or test images
        held_out = {k for name in (args.val_split, "test") for k in dataset.splits.get(name, ())}
        train = dataset.subset(s.sample_id for s in dataset if s.sample_id not in held_out)
        train_how = "all samples" + (" outside the val/test splits" if held_out else "")
    if args.val_split in dataset.splits:
        val = dataset.split(args.val_split)
        how = f"split {args.val_split!r}"
    elif args.val_fraction > 0 and len(train) >= 2:
        val, train = train.stratified_subset(args.val_fraction, args.seed)
        how = f"stratified {args.val_fraction:.0%} of the training samples"
    else:
        val, how = train[:0], "none"
    if args.fraction is not None and args.fraction < 1.0:
        train, _ = train.stratified_subset(args.fraction, args.seed)
    if not any(s.objects for s in train):
        raise UsageError(f"no annotated objects to train on in {path} ({len(train)} training images)")
    log.info("data: %d training images (%s), %d validation images (%s)", len(train), train_how, len(val), how)
    return train, val


def _config(args: argparse.Namespace):
    from rpsam2_backend.engine.modeling.shift_block import ShiftBlockConfig
    from trainer.shift.candidates import GridSpec
    from trainer.shift.config import TrainConfig

    if not 0.0 <= args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.eps < 0:
        raise UsageError(f"--eps must be >= 0, got {args.eps}")
    if args.val_seeds < 0:
        raise UsageError(f"--val-seeds must be >= 0, got {args.val_seeds}")
    for flag in ("resume", "init_from"):
        value = getattr(args, flag)
        if value is not None and not Path(value).exists():
            raise UsageError(f"--{flag.replace('_', '-')} {value} does not exist")
    cache_dir = None if args.cache_dir.lower() == "none" else str(Path(args.cache_dir).expanduser())
    return TrainConfig(
        epochs=args.epochs or 50,
        steps=args.steps,
        batch_size=args.batch_size,
        points_per_object=args.points_per_object,
        lr=args.lr,
        eps=args.eps,
        grid=GridSpec(target_points=args.grid_points),
        shift=ShiftBlockConfig(layers=args.layers),
        val_seeds=args.val_seeds,
        val_every=args.val_every,
        seed=args.seed,
        amp=not args.no_amp,
        cache_dir=cache_dir,
        feature_memory_mb=args.feature_memory_mb,
        resume_from=args.resume,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import torch

    from rpsam2_backend.core.errors import ConfigError
    from trainer.shift.loop import train_shift_block

    config = _config(args)
    train, val = _load_data(args)
    try:
        engine = build_engine(args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    torch.manual_seed(args.seed)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    try:
        result = train_shift_block(train, val, engine, config, out, init_from=args.init_from)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    command = " ".join(shlex.quote(a) for a in [PROG, *argv])
    (out / "command.txt").write_text(command + "\n")
    best = "n/a" if result.best_val_mdsc is None else f"{result.best_val_mdsc:.4f}"
    base = "n/a" if result.baseline_val_mdsc is None else f"{result.baseline_val_mdsc:.4f}"
    print(f"checkpoint: {out}\nbest validation mDSC: {best} at step {result.best_step} (plain SAM2: {base})\n"
          f"metrics: {out / 'metrics.csv'}\ncurve: {out / 'curve.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
