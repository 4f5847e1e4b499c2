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
