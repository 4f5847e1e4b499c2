"""``rpsam2-pseudo-study``: the paper's Fig. 4(a) experiment in one command (``trainer.studies.pseudo_study``).

Example (CaDIS, the shift block fine-tuned from a Cataract-1K checkpoint on 5-60 % of the training
split, 50 epochs each as in the paper, SAM2-FT on the pseudo-masks of the rest)::

    rpsam2-pseudo-study --data /data/CaDIS --format cadis --out runs/fig4a --paper \\
        --init-from runs/shift-cat1k --fractions 0,5,10,20,40,60 \\
        --sam2-checkpoint checkpoints/sam2.1_hiera_large.pt

Writes ``study.md`` (table), ``study.png`` (plot), ``study.json``/``study.csv`` and one folder per
fraction.  User mistakes end with exit status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path

from trainer.cli.common import (
    PAPER_PRESET,
    UsageError,
    add_cache_arguments,
    add_sam2_arguments,
    add_training_arguments,
    build_engine,
    positive_float,
    positive_int,
    resolve_preset,
    run_cli,
    training_config,
)

PROG = "rpsam2-pseudo-study"
# §3.1: "we fine-tuned the shift block on subsets of the training split ... for 50 epochs each".
STUDY_PAPER_PRESET = {**PAPER_PRESET, "epochs": 50}


def _percentages(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated percentages, got {text!r}") from exc
    if not values or any(not 0 <= v < 100 for v in values):
        raise argparse.ArgumentTypeError(f"expected percentages in [0, 100), got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    from trainer.datasets import FORMATS

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fig. 4(a) of the RP-SAM2 paper: train the shift block on X %% of the training split, "
        "pseudo-label the rest from one random click per object with SAM2 and with RP-SAM2, fine-tune SAM2's "
        "mask decoder on each, evaluate all on the test split; a table and a plot over X.",
    )
    data = p.add_argument_group("data")
    data.add_argument("--data", required=True, help="dataset root (CaDIS: ROOT/VideoNN/{Images,Labels})")
    data.add_argument("--format", default="cadis", choices=FORMATS, dest="fmt", help="dataset layout (cadis)")
    for split in ("train", "val", "test"):
        data.add_argument(f"--{split}-split", default=split, help=f"the {split} split's name ({split})")
    data.add_argument("--fractions", type=_percentages, default=[5.0, 10.0, 20.0, 40.0, 60.0],
                      help="percent of the training split that trains the shift block (5,10,20,40,60); "
                      "0 = zero-shot, needs --init-from")

    run = add_training_arguments(p.add_argument_group("shift block"), "epochs per fraction (50, the paper's)")
    run.add_argument("--init-from", default=None,
                     help="shift block to fine-tune from (the paper: its Cataract-1K block); default: from scratch")
    run.add_argument("--out", required=True, help="output folder")

    ft = p.add_argument_group("SAM2-FT")
    ft.add_argument("--decoder-steps", type=positive_int, default=1000, help="decoder fine-tuning steps (1000)")
    ft.add_argument("--decoder-lr", type=positive_float, default=1e-5, help="decoder peak lr (1e-5)")
    ft.add_argument("--decoder-batch-size", type=positive_int, default=4, help="objects per decoder step (4)")
    ft.add_argument("--decoder-points", type=positive_int, default=4, help="clicks per object per decoder step (4)")

    ev = p.add_argument_group("evaluation")
    ev.add_argument("--seeds", type=positive_int, default=10, help="prompts per test object (10)")

    model = p.add_argument_group("SAM2")
    add_sam2_arguments(model)
    add_cache_arguments(model)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _splits(args: argparse.Namespace):
    from trainer.datasets import load_dataset

    path = Path(args.data).expanduser()
    if not path.exists():
        raise UsageError(f"--data {path} does not exist")
    try:
        dataset = load_dataset(path, args.fmt, None)
        parts = [dataset.split(name) for name in (args.train_split, args.val_split, args.test_split)]
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        raise UsageError(f"cannot load {args.fmt} data from {path}: {exc}") from exc
    for name, part in zip(("train", "test"), (parts[0], parts[2]), strict=True):
        if not any(s.objects for s in part):
            raise UsageError(f"the {name} split of {path} has no annotated objects ({len(part)} images)")
    return parts


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from rpsam2_backend.core.errors import ConfigError
    from trainer.decoder_ft import DecoderFTConfig
    from trainer.eval.config import EvalConfig
    from trainer.feature_cache import FeatureCache
    from trainer.studies.pseudo_study import PseudoStudyConfig, run_pseudo_study

    record = resolve_preset(args, STUDY_PAPER_PRESET)
    shift = training_config(args)
    if 0.0 in args.fractions and not args.init_from:
        raise UsageError("--fractions 0 (zero-shot) needs --init-from SHIFT_CHECKPOINT")
    if args.init_from and not Path(args.init_from).is_dir():
        raise UsageError(f"--init-from {args.init_from} does not exist")
    config = PseudoStudyConfig(
        fractions=tuple(args.fractions), shift=shift, seed=args.seed,
        decoder=DecoderFTConfig(steps=args.decoder_steps, lr=args.decoder_lr, batch_size=args.decoder_batch_size,
                                points_per_object=args.decoder_points, seed=args.seed),
        evaluation=EvalConfig(seeds=args.seeds, progress=not args.no_progress),
    )
    train, val, test = _splits(args)
    try:
        engine = build_engine(args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    features = FeatureCache(engine, shift.cache_dir, memory_bytes=shift.feature_memory_mb << 20)
    info = {**record, "command": " ".join(shlex.quote(a) for a in [PROG, *argv]), "data": str(args.data)}
    try:
        run_pseudo_study(train, val, test, engine, config, args.out, init_from=args.init_from,
                         feature_cache=features, info=info)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    out = Path(args.out)
    print(f"table: {out / 'study.md'}\nplot: {out / 'study.png'}\nresults: {out / 'study.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
