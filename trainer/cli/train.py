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
``val``) when present, else a stratified ``--val-fraction`` (default 0.2; ``--paper`` 0.25, which
turns a Cataract-1K fold's 80 % train CSV into the paper's 60/20/20 split) carved out of the
training samples (0 disables validation; the last checkpoint is then kept).  ``--fraction`` then
keeps a stratified share of the training samples (the paper's 5-60 % subsets).

``--paper`` sets every knob to the paper's training setting (``PAPER_PRESET``: 1500 epochs, batch 4,
lr 1e-4 with SAM2's cosine decay to lr/10, AdamW weight decay 0.1 and gradient clip 0.1, SAM2's image
augmentations, 10 refined clicks per object drawn from its grid points, 6 layers, s initialised to 0.1,
the outside loss only for n̂ < 0.5, Hiera-L, validation 25 % of the training samples); any flag given
explicitly wins and is listed as an override.  The preset, the overrides and the command are printed
and written to ``training.json`` ("run").

User mistakes (missing paths, bad values, no SAM2 checkpoint) end with exit status 2 and one line on
stderr, no traceback.
"""

from __future__ import annotations

import argparse
import json
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
    fraction_arg,
    load_training_data,
    resolve_preset,
    run_cli,
    training_config,
)

PROG = "rpsam2-train"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train the RP-SAM2 shift block (paper §3.2) with frozen SAM2 and write a checkpoint "
        "directory the backend loads through RPSAM2_SHIFT_CHECKPOINT.",
    )
    data = add_training_data_arguments(p.add_argument_group("data"))
    data.add_argument("--fraction", type=fraction_arg, default=None,
                      help="train on a stratified subset with this share of the training samples")

    run = add_training_arguments(p.add_argument_group("training"), "epochs (default 50; --paper 1500)")
    run.add_argument("--out", required=True, help="output (checkpoint) directory")
    run.add_argument("--resume", default=None, help="continue the run in this directory (its resume.pt)")
    run.add_argument("--init-from", default=None, help="start from this shift-block checkpoint directory")

    model = p.add_argument_group("SAM2")
    add_sam2_arguments(model)
    add_cache_arguments(model)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _load_data(args: argparse.Namespace):
    _, train, val = load_training_data(args)
    return train, val


def _config(args: argparse.Namespace):
    for flag in ("resume", "init_from"):
        value = getattr(args, flag)
        if value is not None and not Path(value).exists():
            raise UsageError(f"--{flag.replace('_', '-')} {value} does not exist")
    return training_config(args)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import torch

    from rpsam2_backend.core.errors import ConfigError
    from trainer.shift.loop import train_shift_block

    run_record = resolve_preset(args, PAPER_PRESET)
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
