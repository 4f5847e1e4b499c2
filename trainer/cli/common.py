"""What the trainer's command lines share: SAM2 options, building the engine, usage errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


class UsageError(Exception):
    """A mistake in the command line or its inputs: message, exit status 2, no traceback."""


def add_sam2_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--sam2-config", default=None,
                       help="SAM2 config (default: RPSAM2_SAM2_CONFIG or configs/sam2.1/sam2.1_hiera_l.yaml)")
    group.add_argument("--sam2-checkpoint", default=None,
                       help="SAM2 weights (default: RPSAM2_SAM2_CHECKPOINT / RPSAM2_CHECKPOINT_DIR)")
    group.add_argument("--allow-random-weights", action="store_true",
                       help="run without a SAM2 checkpoint (random weights; smoke tests only)")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or auto (default: RPSAM2_DEVICE or auto)")


def build_engine(args: argparse.Namespace):
    """SAM2 from the command line over the environment's settings (ConfigError names the fix)."""
    from rpsam2_backend.engine.build import resolve_device
    from rpsam2_backend.engine.sam2_engine import SAM2Engine

    settings = model_settings(args)
    checkpoint = settings.resolved_checkpoint()
    return SAM2Engine.build(settings.model.sam2_config, checkpoint, resolve_device(settings.model.device))


def build_video_engine(args: argparse.Namespace):
    """SAM2's video predictor from the same options (one per process: ``shared_video_engine``)."""
    from rpsam2_backend.engine.build import resolve_device
    from rpsam2_backend.engine.video.tracker import shared_video_engine

    settings = model_settings(args)
    return shared_video_engine(settings.model.sam2_config, settings.resolved_checkpoint(),
                               resolve_device(settings.model.device), settings.learning.propagate_image_size)


def model_settings(args: argparse.Namespace):
    """The environment's settings with the SAM2 options of the command line applied."""
    from rpsam2_backend.core.settings import Settings

    changes: dict = {}
    if args.sam2_config:
        changes["sam2_config"] = args.sam2_config
    if args.sam2_checkpoint:
        if not Path(args.sam2_checkpoint).is_file():
            raise UsageError(f"--sam2-checkpoint {args.sam2_checkpoint} does not exist")
        changes["sam2_checkpoint"] = args.sam2_checkpoint
    if args.allow_random_weights:
        changes["allow_random_weights"] = True
    if args.device:
        changes["device"] = args.device
    return Settings.from_env().with_("model", **changes)


def run_cli(prog: str, parser: argparse.ArgumentParser, run: Callable, argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)  # argparse itself exits 2 with a message on bad syntax
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args, argv)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def add_training_data_arguments(data: argparse._ArgumentGroup) -> argparse._ArgumentGroup:
    """The data flags of the commands that train shift blocks (``load_training_data`` reads them)."""
    from trainer.datasets import FORMATS

    data.add_argument("--data", required=True, help="dataset root (a Label Studio export file for labelstudio)")
    data.add_argument("--format", required=True, choices=FORMATS, dest="fmt", help="dataset layout")
    data.add_argument("--train-split", default="train", help="split to train on when the dataset has it")
    data.add_argument("--val-split", default="val", help="split to validate on when the dataset has it")
    data.add_argument("--val-fraction", type=float, default=None,
                      help="without a validation split: stratified share of the training samples (0: none; "
                      "default 0.2; --paper 0.25: of a Cataract-1K fold's train CSV, 80 %% of the frames, that "
                      "is the paper's 60/20/20 train/val/test)")
    data.add_argument("--fold", type=int, default=None, help="Cataract-1K fold of the split CSVs (default 0)")
    add_merge_by_class_argument(data)
    return data


def add_merge_by_class_argument(data: argparse._ArgumentGroup) -> None:
    data.add_argument("--merge-by-class", action=argparse.BooleanOptionalAction, default=None,
                      help="Cataract-1K: all objects of one class in a frame form one object (default: merged, "
                      "like the dataset's semantic masks; this sets the W. Avg. object counts and what each "
                      "click is scored against); --no-merge-by-class keeps the Supervisely objects apart")


def dataset_options(args: argparse.Namespace) -> dict:
    """The loader options the flags set (``--fold``, ``--merge-by-class``); UsageError for another format."""
    options = {}
    if args.fold is not None:
        if args.fmt != "cataract1k":
            raise UsageError("--fold applies to --format cataract1k only")
        options["fold"] = args.fold
    merge = getattr(args, "merge_by_class", None)
    if merge is not None:
        if args.fmt != "cataract1k":
            raise UsageError("--merge-by-class applies to --format cataract1k only (CaDIS labels are per class)")
        options["merge_by_class"] = merge
    return options


def load_cli_dataset(args: argparse.Namespace, split: str | None):
    """``--data`` in ``--format`` (``--fold`` and ``--merge-by-class`` for Cataract-1k), one split or all;
    UsageError names the flag."""
    from trainer.datasets import load_dataset

    path = Path(args.data).expanduser()
    if not path.exists():
        raise UsageError(f"--data {path} does not exist")
    options = dataset_options(args)
    try:
        return load_dataset(path, args.fmt, split, **options)
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        raise UsageError(f"cannot load {args.fmt} data from {path}: {exc}") from exc


def load_training_data(args: argparse.Namespace):
    """(whole dataset, training samples, validation samples) from the flags of ``add_training_data_arguments``.

    Training uses ``--train-split`` when the dataset has it, else every sample outside the validation
    and ``test`` splits; validation ``--val-split`` when present, else a stratified ``--val-fraction`` of
    the training samples (0.2 unless set, ``resolve_preset`` makes it 0.25 with ``--paper``);
    ``args.fraction`` (when the command has it) then keeps a stratified share."""
    if args.val_fraction is None:
        args.val_fraction = DEFAULTS["val_fraction"]
    if not 0.0 <= args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    dataset = load_cli_dataset(args, None)

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
    fraction = getattr(args, "fraction", None)
    if fraction is not None and fraction < 1.0:
        train, _ = train.stratified_subset(fraction, args.seed)
    if not any(s.objects for s in train):
        raise UsageError(f"no annotated objects to train on in {args.data} ({len(train)} training images)")
    test = len(dataset.splits.get("test", ()))
    total = len(train) + len(val) + test
    logging.getLogger(__name__).info(
        "data: %d training images (%s), %d validation images (%s), %d test images: %.0f/%.0f/%.0f %%",
        len(train), train_how, len(val), how, test, *(100 * n / max(total, 1) for n in (len(train), len(val), test)))
    return dataset, train, val


# --- shift-block training flags, shared by rpsam2-train, rpsam2-ablation and rpsam2-pseudo-study ------------

HIERA_L = "configs/sam2.1/sam2.1_hiera_l.yaml"
DEFAULT_CACHE_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rpsam2")

# Knobs with a default and a paper value; their flags default to None so that an explicit flag wins.
DEFAULTS: dict[str, object] = {
    "epochs": 50, "batch_size": 4, "points_per_object": 10, "lr": 1e-4, "layers": 6, "eps": 0.005,
    "weight_decay": 0.1, "grad_clip": 0.1, "lr_schedule": "cosine", "outside_loss": "below_half",
    "augment": False, "scale_init": 0.1, "scale_init_mode": "raw", "sam2_config": None, "train_clicks": "area",
    "val_fraction": 0.2,
}
# The paper's training (§3.2): 1500 epochs, batch 4, lr 1e-4, SAM2's recipe and augmentations, Hiera-L,
# the 10 training clicks drawn from each object's grid points.  §3.1: train/val/test 60/20/20 of the frames;
# Cataract-1K's fold CSVs give train 80 % / test 20 %, so the validation images are a stratified 25 % of the
# train CSV (0.25 x 80 % = 20 %).  (Commands without --val-fraction, e.g. the pseudo-study, skip it.)
PAPER_PRESET: dict[str, object] = {**DEFAULTS, "epochs": 1500, "augment": True, "sam2_config": HIERA_L,
                                   "train_clicks": "grid", "val_fraction": 0.25}


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def fraction_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from exc
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_training_arguments(run: argparse._ArgumentGroup, epochs_help: str) -> argparse._ArgumentGroup:
    """The shift-block training flags (``training_config`` reads them, after ``resolve_preset``)."""
    run.add_argument("--paper", action="store_true",
                     help="the paper's setting: batch 4, lr 1e-4 cosine to 1e-5, wd 0.1, clip 0.1, SAM2 "
                     "augmentations, clicks on the grid, Hiera-L, the paper's epochs (explicit flags override single "
                     "values)")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, default=None, help=epochs_help)
    length.add_argument("--steps", type=positive_int, default=None, help="optimiser steps instead of epochs")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--layers", type=positive_int, default=None, help="point-to-image attention layers (6)")
    run.add_argument("--batch-size", type=positive_int, default=None, help="objects per step (4)")
    run.add_argument("--points-per-object", type=positive_int, default=None,
                     help="random clicks per object per step (10)")
    run.add_argument("--train-clicks", choices=("area", "grid"), default=None,
                     help="where the training clicks fall: area = uniform over the object (default); grid = "
                     "distinct points of its candidate grid (--paper: \"a grid sampling of points in each "
                     "object and refine 10 random points\")")
    run.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (1e-4)")
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
    run.add_argument("--grid-points", type=positive_int, default=64, help="about this many grid points per object")
    run.add_argument("--val-seeds", type=int, default=3, help="single-click prompts per validation object")
    run.add_argument("--val-every", type=positive_int, default=None,
                     help="steps between validations (default: epoch)")
    run.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    return run


def add_cache_arguments(model: argparse._ArgumentGroup) -> None:
    model.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR,
                       help=f"embedding + candidate cache (default {DEFAULT_CACHE_DIR}; 'none' for memory only)")
    model.add_argument("--feature-memory-mb", type=positive_int, default=2048,
                       help="RAM for image embeddings (8 MB per image); the rest is read from --cache-dir")


def resolve_preset(args: argparse.Namespace, paper: dict[str, object]) -> dict:
    """Fill the knobs of ``DEFAULTS`` in ``args`` from ``paper`` (with ``--paper``) or the defaults; returns
    the run record: preset name, its values and the explicit flags that override them."""
    preset = {k: v for k, v in (paper if args.paper else DEFAULTS).items() if hasattr(args, k)}
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


def cache_dir_of(args: argparse.Namespace) -> str | None:
    return None if args.cache_dir.lower() == "none" else str(Path(args.cache_dir).expanduser())


def training_config(args: argparse.Namespace):
    """The ``TrainConfig`` of the training flags (call ``resolve_preset`` first)."""
    from rpsam2_backend.engine.modeling.shift_block import ShiftBlockConfig
    from trainer.shift.candidates import GridSpec
    from trainer.shift.config import TrainConfig

    if not 0.0 <= (getattr(args, "val_fraction", None) or 0.0) < 1.0:  # checked again when loading; fail first
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.eps < 0:
        raise UsageError(f"--eps must be >= 0, got {args.eps}")
    if args.val_seeds < 0:
        raise UsageError(f"--val-seeds must be >= 0, got {args.val_seeds}")
    if args.weight_decay < 0 or args.grad_clip < 0:
        raise UsageError("--weight-decay and --grad-clip must be >= 0")
    try:
        shift = ShiftBlockConfig(layers=args.layers, scale_init=args.scale_init, scale_init_mode=args.scale_init_mode)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return TrainConfig(
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        points_per_object=args.points_per_object,
        train_clicks=args.train_clicks,
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
        cache_dir=cache_dir_of(args),
        feature_memory_mb=args.feature_memory_mb,
        resume_from=getattr(args, "resume", None),
        progress=not args.no_progress,
    )
