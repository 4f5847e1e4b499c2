"""``rpsam2-ablation``: the paper's Fig. 4(b) in one command (``trainer.studies.ablation``).

Example (Cataract-1K, each variant trained as the paper trains the full method)::

    rpsam2-ablation --data /data/cataract-1k --format cataract1k --out runs/fig4b --paper \\
        --sam2-checkpoint checkpoints/sam2.1_hiera_large.pt

Variants: ``--losses dice,dice+dist,dice+dist+out``, ``--points 6,8,10``, ``--layers-options 2,6``; the
base (the full method) comes from the training flags (``--paper`` for the paper's).  Training data as
``rpsam2-train`` (``--train-split``, ``--val-split``/``--val-fraction``); evaluation on ``--test-split``.
Writes ``ablation.md`` (table), ``ablation.png`` (plot), ``ablation.json``, ``runs/`` and ``eval/``.
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
    add_training_data_arguments,
    build_engine,
    int_list,
    load_training_data,
    positive_int,
    resolve_preset,
    run_cli,
    training_config,
)

PROG = "rpsam2-ablation"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fig. 4(b) of the RP-SAM2 paper: loss terms, refined points per object and layers, each "
        "trained and evaluated with the same protocol; one table and one plot.",
    )
    data = add_training_data_arguments(p.add_argument_group("data"))
    data.add_argument("--test-split", default="test", help="split to evaluate on (test)")

    run = add_training_arguments(p.add_argument_group("training (the full method)"),
                                 "epochs per variant (default 50; --paper 1500)")
    run.add_argument("--out", required=True, help="output folder")

    ab = p.add_argument_group("variants")
    ab.add_argument("--losses", default="dice,dice+dist,dice+dist+out",
                    help="loss variants, from dice, dice+dist, dice+dist+out")
    ab.add_argument("--points", type=int_list, default=[6, 8, 10], help="refined points per object (6,8,10)")
    ab.add_argument("--layers-options", type=int_list, default=[2, 6], help="shift-block layers (2,6)")
    ab.add_argument("--seeds", type=positive_int, default=10, help="prompts per test object (10)")

    model = p.add_argument_group("SAM2")
    add_sam2_arguments(model)
    add_cache_arguments(model)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from rpsam2_backend.core.errors import ConfigError
    from trainer.eval.config import EvalConfig
    from trainer.feature_cache import FeatureCache
    from trainer.studies.ablation import ablation_variants, run_ablation

    record = resolve_preset(args, PAPER_PRESET)
    base = training_config(args)
    losses = [name.strip() for name in args.losses.split(",") if name.strip()]
    try:
        variants = ablation_variants(base, losses, args.points, args.layers_options)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    dataset, train, val = load_training_data(args)
    if args.test_split not in dataset.splits:
        raise UsageError(f"--test-split {args.test_split!r}: the dataset has splits {sorted(dataset.splits)}")
    test = dataset.split(args.test_split)
    if not any(s.objects for s in test):
        raise UsageError(f"the {args.test_split} split has no annotated objects ({len(test)} images)")
    try:
        engine = build_engine(args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    features = FeatureCache(engine, base.cache_dir, memory_bytes=base.feature_memory_mb << 20)
    info = {**record, "command": " ".join(shlex.quote(a) for a in [PROG, *argv]), "data": str(args.data)}
    run_ablation(train, val, test, engine, variants, EvalConfig(seeds=args.seeds, progress=not args.no_progress),
                 args.out, feature_cache=features, info=info)
    out = Path(args.out)
    print(f"table: {out / 'ablation.md'}\nplot: {out / 'ablation.png'}\nresults: {out / 'ablation.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
