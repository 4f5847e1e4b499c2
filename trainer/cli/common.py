"""What the trainer's command lines share: SAM2 options, building the engine, usage errors."""

from __future__ import annotations

import argparse
import logging
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
    from rpsam2_backend.core.settings import Settings
    from rpsam2_backend.engine.build import resolve_device
    from rpsam2_backend.engine.sam2_engine import SAM2Engine

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
    settings = Settings.from_env().with_("model", **changes)
    checkpoint = settings.resolved_checkpoint()
    return SAM2Engine.build(settings.model.sam2_config, checkpoint, resolve_device(settings.model.device))


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
    data.add_argument("--val-fraction", type=float, default=0.2,
                      help="without a validation split: stratified share of the training samples (0: none)")
    data.add_argument("--fold", type=int, default=None, help="Cataract-1K fold of the split CSVs (default 0)")
    return data


def load_training_data(args: argparse.Namespace):
    """(whole dataset, training samples, validation samples) from the flags of ``add_training_data_arguments``.

    Training uses ``--train-split`` when the dataset has it, else every sample outside the validation
    and ``test`` splits; validation ``--val-split`` when present, else a stratified ``--val-fraction`` of
    the training samples; ``args.fraction`` (when the command has it) then keeps a stratified share."""
    from trainer.datasets import load_dataset

    path = Path(args.data).expanduser()
    if not path.exists():
        raise UsageError(f"--data {path} does not exist")
    if not 0.0 <= args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
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
    fraction = getattr(args, "fraction", None)
    if fraction is not None and fraction < 1.0:
        train, _ = train.stratified_subset(fraction, args.seed)
    if not any(s.objects for s in train):
        raise UsageError(f"no annotated objects to train on in {path} ({len(train)} training images)")
    logging.getLogger(__name__).info("data: %d training images (%s), %d validation images (%s)",
                                     len(train), train_how, len(val), how)
    return dataset, train, val
