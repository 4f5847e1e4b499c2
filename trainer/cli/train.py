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

``--paper`` sets every knob to the paper's training setting (``PAPER_PRESET``: 1500 epochs, batch 4,
lr 1e-4 with SAM2's cosine decay to lr/10, AdamW weight decay 0.1 and gradient clip 0.1, SAM2's image
augmentations, 10 refined clicks per object, 6 layers, s initialised to 0.1, the outside loss only
for n̂ < 0.5, Hiera-L); any flag given explicitly wins and is listed as an override.  The preset, the
overrides and the command are printed and written to ``training.json`` ("run").

User mistakes (missing paths, bad values, no SAM2 checkpoint) end with exit status 2 and one line on
stderr, no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from trainer.cli.common import (
    UsageError,
    add_sam2_arguments,
    add_training_data_arguments,
    build_engine,
    load_training_data,
    run_cli,
)

PROG = "rpsam2-train"
HIERA_L = "configs/sam2.1/sam2.1_hiera_l.yaml"

# Knobs with a default and a paper value; the flags default to None so that an explicit flag wins.
DEFAULTS: dict[str, object] = {
    "epochs": 50, "batch_size": 4, "points_per_object": 10, "lr": 1e-4, "layers": 6, "eps": 0.005,
    "weight_decay": 0.1, "grad_clip": 0.1, "lr_schedule": "cosine", "outside_loss": "below_half",
    "augment": False, "scale_init": 0.1, "scale_init_mode": "raw", "sam2_config": None,
}
PAPER_PRESET: dict[str, object] = {
    **DEFAULTS, "epochs": 1500, "augment": True, "sam2_config": HIERA_L,
}
DEFAULT_CACHE_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rpsam2")



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
    data = add_training_data_arguments(p.add_argument_group("data"))
    data.add_argument("--fraction", type=_fraction, default=None,
                      help="train on a stratified subset with this share of the training samples")

    run = p.add_argument_group("training")
    run.add_argument("--paper", action="store_true",
                     help="the paper's setting: 1500 epochs, batch 4, lr 1e-4 cosine to 1e-5, wd 0.1, clip 0.1, "
                     "SAM2 augmentations, Hiera-L (explicit flags override single values)")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default 50; --paper 1500)")
    length.add_argument("--steps", type=_positive_int, default=None, help="optimiser steps instead of epochs")
    run.add_argument("--out", required=True, help="output (checkpoint) directory")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--layers", type=_positive_int, default=None, help="point-to-image attention layers (6)")
    run.add_argument("--batch-size", type=_positive_int, default=None, help="objects per step (4)")
    run.add_argument("--points-per-object", type=_positive_int, default=None,
                     help="random clicks per object per step (10)")
    run.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate (1e-4)")
    run.add_argument("--lr-schedule", choices=("cosine", "constant"), default=None,
                     help="cosine: SAM2's per-step decay to lr/10 (default); constant")
    run.add_argument("--weight-decay", type=float, default=None,
                     help="AdamW weight decay, not on biases/norms/positional embeddings/scale (0.1)")
    run.add_argument("--grad-clip", type=float, default=None, help="max gradient norm, 0 = off (0.1)")
    run.add_argument("--outside-loss", choices=("below_half", "always"), default=None,
                     help="below_half: penalise only refined points with n̂ < 0.5 (the paper, default); "
                     "always: -log n̂ for every point")
    run.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                     help="SAM2's image augmentations, re-encoding every step (default off; --paper on)")
    run.add_argument("--scale-init", type=float, default=None, help="initial shift scale (0.1)")
    run.add_argument("--scale-init-mode", choices=("raw", "sigma"), default=None,
                     help="raw: the parameter s starts at --scale-init (the paper's text, default); "
                     "sigma: σ(s) does")
    run.add_argument("--eps", type=float, default=None, help="candidate tolerance in Dice (0.005 = 0.5 %%)")
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
    _, train, val = load_training_data(args)
    return train, val


def resolve_preset(args: argparse.Namespace) -> dict:
    """Fill the knobs of ``DEFAULTS`` in ``args`` from the preset (``--paper``) or the defaults; returns the
    run record: preset name, its values and the explicit flags that override them."""
    preset = PAPER_PRESET if args.paper else DEFAULTS
    overrides = {}
    for key, value in preset.items():
        given = getattr(args, key)
        if given is None:
            setattr(args, key, value)
        elif args.paper and given != value:
            overrides[key] = given
    if args.paper and args.steps is not None:
        overrides["steps"] = args.steps
    return {"preset": "paper" if args.paper else None, "preset_values": dict(preset) if args.paper else {},
            "overrides": overrides}


def _config(args: argparse.Namespace):
    from rpsam2_backend.engine.modeling.shift_block import ShiftBlockConfig
    from trainer.shift.candidates import GridSpec
    from trainer.shift.config import TrainConfig

    if not 0.0 <= args.val_fraction < 1.0:  # load_training_data checks it too; fail before anything loads
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.eps < 0:
        raise UsageError(f"--eps must be >= 0, got {args.eps}")
    if args.val_seeds < 0:
        raise UsageError(f"--val-seeds must be >= 0, got {args.val_seeds}")
    for flag in ("resume", "init_from"):
        value = getattr(args, flag)
        if value is not None and not Path(value).exists():
            raise UsageError(f"--{flag.replace('_', '-')} {value} does not exist")
    if args.weight_decay < 0 or args.grad_clip < 0:
        raise UsageError("--weight-decay and --grad-clip must be >= 0")
    cache_dir = None if args.cache_dir.lower() == "none" else str(Path(args.cache_dir).expanduser())
    try:
        shift = ShiftBlockConfig(layers=args.layers, scale_init=args.scale_init, scale_init_mode=args.scale_init_mode)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return TrainConfig(
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        points_per_object=args.points_per_object,
        lr=args.lr,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        lr_schedule=args.lr_schedule,
        outside_loss=args.outside_loss,
        augment=args.augment,
        eps=args.eps,
        grid=GridSpec(target_points=args.grid_points),
        shift=shift,
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

    run_record = resolve_preset(args)
    config = _config(args)
    command = " ".join(shlex.quote(a) for a in [PROG, *argv])
    run_record["command"] = command
    if run_record["preset"]:
        print(json.dumps({"preset": run_record["preset"], "values": run_record["preset_values"],
                          "overrides": run_record["overrides"]}, default=str))
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
        result = train_shift_block(train, val, engine, config, out, init_from=args.init_from, run_info=run_record)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
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
