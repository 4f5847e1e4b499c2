"""``rpsam2-eval``: the paper's Table 1 (and Table 2, heatmaps) on a dataset, in one command.

Example (Cataract-1K test split, SAM2 vs RP-SAM2 vs SAM2-FT, 10 seeds)::

    rpsam2-eval --data /data/cataract-1k --format cataract1k --split test \\
        --methods sam2,rpsam2,sam2ft --seeds 10 --out runs/eval \\
        --sam2-config configs/sam2.1/sam2.1_hiera_l.yaml --sam2-checkpoint checkpoints/sam2.1_hiera_large.pt \\
        --shift-checkpoint runs/train/best --decoder-checkpoint runs/sam2ft --table2 --heatmaps 5 \\
        --baseline medsam2=MedSAM2/sam2/configs/sam2.1_hiera_t512.yaml:checkpoints/MedSAM2_latest.pt

``--baseline NAME=CONFIG:CHECKPOINT`` (repeatable) adds another SAM2-architecture model as a column:
CONFIG is a packaged sam2 config name or a config file, CHECKPOINT its weights (``random`` for random
weights with ``--allow-random-weights``: smoke tests).  Each baseline encodes every image once with its
own encoder and decodes the same prompts as the other methods.

User mistakes (missing data or checkpoints, unknown format, empty split) end with exit status 2 and
one line on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from trainer.cli.common import (
    UsageError,
    add_merge_by_class_argument,
    add_sam2_arguments,
    build_engine,
    dataset_options,
    int_list,
    load_cli_dataset,
    run_cli,
)
from trainer.datasets import FORMATS

METHOD_NAMES = ("sam2", "rpsam2", "sam2ft")
TESTS = {"wilcoxon": "Wilcoxon signed-rank", "ttest": "paired t-test"}
PROG = "rpsam2-eval"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate SAM2 / RP-SAM2 / SAM2-FT with the RP-SAM2 paper's protocol (§3.3): mDSC and "
        "mHD95 as mean±std across seeds, per class, averaged and weighted; paired significance test; "
        "optional Table 2 (2/3/5 points) and Dice heatmaps.",
    )
    data = p.add_argument_group("data")
    data.add_argument("--data", required=True,
                      help="dataset root (a Label Studio export file for --format labelstudio)")
    data.add_argument("--format", required=True, choices=FORMATS, dest="fmt", help="dataset layout")
    data.add_argument("--split", default=None,
                      help="split to evaluate (default: test; 'all' for every sample; Label Studio exports have none)")
    data.add_argument("--fold", type=int, default=None, help="Cataract-1K fold of the split CSVs (default 0)")
    add_merge_by_class_argument(data)

    ev = p.add_argument_group("protocol")
    ev.add_argument("--methods", default="sam2,rpsam2", help=f"comma-separated, from {', '.join(METHOD_NAMES)}")
    ev.add_argument("--seeds", type=int, default=10, help="number of prompts per object (seeds 0..N-1)")
    ev.add_argument("--points", type=int, default=1, help="random positive points per object in Table 1")
    ev.add_argument("--table2", action="store_true", help="also compute Table 2 (see --table2-points), same pass")
    ev.add_argument("--table2-points", type=int_list, default=[2, 3, 5], help="point counts of Table 2")
    ev.add_argument("--test", choices=sorted(TESTS), default="wilcoxon", help="paired significance test")
    ev.add_argument("--heatmaps", type=int, default=0, help="draw Dice heatmaps for the first N objects")
    ev.add_argument("--heatmap-objects", default="",
                    help="comma-separated SAMPLE_ID::OBJECT_ID (or sample ids) to draw heatmaps for")
    ev.add_argument("--heatmap-points", type=int, default=256, help="grid points per heatmap (about)")
    ev.add_argument("--out", required=True, help="output folder (report.md, scores.csv, summary.json, heatmaps/)")

    model = p.add_argument_group("models")
    add_sam2_arguments(model)
    model.add_argument("--shift-checkpoint", default=None, help="shift-block directory (rpsam2-train output)")
    model.add_argument("--decoder-checkpoint", default=None, help="fine-tuned mask decoder directory (SAM2-FT)")
    model.add_argument("--baseline", action="append", default=[], metavar="NAME=CONFIG:CHECKPOINT",
                       help="another SAM2-architecture model as a column (repeatable), e.g. "
                       "medsam2=sam2.1_hiera_t512.yaml:MedSAM2_latest.pt; CHECKPOINT 'random' needs "
                       "--allow-random-weights")
    model.add_argument("--batch-size", type=int, default=64, help="prompts per decoder call")
    model.add_argument("--cache-dir", default=None,
                       help="image-embedding cache folder, e.g. rpsam2-train's (stored as float16); "
                       "default: none -- each image is encoded once per run anyway")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    video = p.add_argument_group("video (trainer/eval/video.py)")
    video.add_argument("--video", action="store_true",
                       help="propagation mode: seed each object on its first frame of a video (ground-truth mask "
                       "for sam2, one click refined by the shift block for rpsam2, plus sam2-click), track it with "
                       "SAM2's video predictor, report mDSC / mHD95 per distance from the seed frame")
    video.add_argument("--max-distance", type=int, default=10, help="frames tracked after each seed frame (--video)")
    return p


def _methods(text: str, args: argparse.Namespace) -> list[str]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHOD_NAMES]
    if unknown or not names:
        raise UsageError(f"--methods: unknown {unknown or 'empty list'}; choose from {', '.join(METHOD_NAMES)}")
    if len(set(names)) != len(names):
        raise UsageError(f"--methods lists a method twice: {text!r}")
    if "rpsam2" in names and not args.shift_checkpoint:
        raise UsageError("--methods includes rpsam2 but no --shift-checkpoint DIR was given")
    if "sam2ft" in names and not args.decoder_checkpoint:
        raise UsageError("--methods includes sam2ft but no --decoder-checkpoint DIR was given")
    # Checked before the (slow) model build; the contents are checked when loading.
    checkpoints = (("--shift-checkpoint", args.shift_checkpoint), ("--decoder-checkpoint", args.decoder_checkpoint))
    for flag, path in checkpoints:
        if path and not Path(path).is_dir():
            raise UsageError(f"{flag} {path} does not exist (expected a checkpoint directory)")
    return names


def _load_data(args: argparse.Namespace):
    split = args.split
    if split is None:
        split = None if args.fmt == "labelstudio" else "test"
    elif split.lower() == "all":
        split = None
    dataset = load_cli_dataset(args, split)
    path = Path(args.data)
    if len(dataset) == 0 or not any(s.objects for s in dataset):
        which = f"split {split!r}" if split else "dataset"
        raise UsageError(f"{which} of {path} has no annotated objects to evaluate ({len(dataset)} images)")
    return dataset, split


def _method_specs(names: Sequence[str], args: argparse.Namespace, device) -> dict:
    from rpsam2_backend.engine.decoder_weights import DECODER_WEIGHTS_FILE
    from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
    from trainer.eval.methods import MethodSpec

    specs = {}
    for name in names:
        if name == "sam2":
            specs[name] = MethodSpec.sam2()
        elif name == "rpsam2":
            try:
                block = ShiftBlock.load(args.shift_checkpoint, device=device)
            except FileNotFoundError as exc:
                raise UsageError(f"--shift-checkpoint: {exc}") from exc
            specs[name] = MethodSpec.rpsam2(block, args.shift_checkpoint)
        else:
            if not (Path(args.decoder_checkpoint) / DECODER_WEIGHTS_FILE).is_file():
                raise UsageError(f"--decoder-checkpoint {args.decoder_checkpoint} has no {DECODER_WEIGHTS_FILE} "
                                 "(write one with the SAM2-FT trainer)")
            specs[name] = MethodSpec.sam2ft(args.decoder_checkpoint)
    return specs


BASELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_baselines(values: Sequence[str], allow_random: bool) -> list[tuple[str, str, str | None]]:
    """``NAME=CONFIG:CHECKPOINT`` -> (name, config, checkpoint or None for random weights), checked
    before any model is built."""
    out: list[tuple[str, str, str | None]] = []
    for value in values:
        name, eq, rest = value.partition("=")
        config, colon, checkpoint = rest.partition(":")
        if not eq or not colon or not name or not config or not checkpoint:
            raise UsageError(f"--baseline {value!r}: expected NAME=CONFIG:CHECKPOINT")
        if not BASELINE_NAME.match(name):
            raise UsageError(f"--baseline {value!r}: NAME may hold letters, digits, '_', '-', '.'")
        if name.lower() in METHOD_NAMES or name in [n for n, _, _ in out]:
            raise UsageError(f"--baseline name {name!r} is taken (by a method or another baseline)")
        if checkpoint == "random":
            if not allow_random:
                raise UsageError(f"--baseline {name}: random weights need --allow-random-weights")
            out.append((name, config, None))
            continue
        if not Path(checkpoint).is_file():
            raise UsageError(f"--baseline {name}: checkpoint {checkpoint} does not exist")
        out.append((name, config, checkpoint))
    return out


def _baseline_specs(baselines: Sequence[tuple[str, str, str | None]], device) -> dict:
    from rpsam2_backend.core.errors import ConfigError
    from rpsam2_backend.engine.sam2_engine import SAM2Engine
    from trainer.eval.methods import MethodSpec

    specs = {}
    for name, config, checkpoint in baselines:
        try:
            engine = SAM2Engine.build(config, checkpoint, str(device))
        except ConfigError as exc:
            raise UsageError(f"--baseline {name}: {exc}") from exc
        specs[name] = MethodSpec.baseline(name, engine)
    return specs


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from rpsam2_backend.core.errors import ConfigError
    from trainer.eval.config import EvalConfig, select_heatmaps
    from trainer.eval.run import evaluate
    from trainer.shift.candidates import GridSpec

    for flag in ("seeds", "points", "batch_size", "heatmap_points", "max_distance"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1")
    if args.video:
        return _run_video(args, argv)
    if args.heatmaps < 0:
        raise UsageError("--heatmaps must be >= 0")
    names = _methods(args.methods, args)
    baselines = parse_baselines(args.baseline, args.allow_random_weights)
    dataset, split = _load_data(args)
    heatmaps: int | list[str] = args.heatmaps
    if args.heatmap_objects:
        heatmaps = [k.strip() for k in args.heatmap_objects.split(",") if k.strip()]
    try:
        select_heatmaps(dataset, heatmaps)  # before the (slow) model build
        engine = build_engine(args)
    except (ValueError, ConfigError) as exc:
        raise UsageError(str(exc)) from exc
    specs = _method_specs(names, args, engine.device)
    specs.update(_baseline_specs(baselines, engine.device))
    cache = None
    if args.cache_dir and args.cache_dir.lower() != "none":
        from trainer.feature_cache import FeatureCache

        cache = FeatureCache(engine, Path(args.cache_dir).expanduser())
    info = {
        "data_path": str(Path(args.data).resolve()),
        "format": args.fmt,
        "split": split or "all",
        "dataset_options": dataset_options(args),
        "command": " ".join(shlex.quote(a) for a in [PROG, *argv]),
    }
    config = EvalConfig(
        seeds=args.seeds, n_points=args.points, mode="both" if args.table2 else "table1",
        table2_points=args.table2_points, heatmaps=heatmaps, heatmap_grid=GridSpec(target_points=args.heatmap_points),
        test=TESTS[args.test], batch_size=args.batch_size, progress=not args.no_progress,
    )
    result = evaluate(dataset, engine, specs, config, args.out, feature_cache=cache, info=info)
    print(f"report: {result.report_path}\nscores: {result.scores_path}\nsummary: {result.summary_path}")
    if result.heatmaps:
        print(f"heatmaps: {len(result.heatmaps)} PNG in {result.out_dir / 'heatmaps'}")
    return 0


def _run_video(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from tqdm import tqdm

    from rpsam2_backend.core.errors import ConfigError
    from trainer.cli.common import build_video_engine
    from trainer.eval.video import CLICK, MASK, VideoMethod, evaluate_video

    names = _methods(args.methods, args)
    if "sam2ft" in names:
        raise UsageError("--video seeds with sam2 (mask) or rpsam2 (refined click); sam2ft is not a video seed")
    dataset, split = _load_data(args)
    try:
        engine, video_engine = build_engine(args), build_video_engine(args)
    except (ValueError, ConfigError) as exc:
        raise UsageError(str(exc)) from exc
    methods = {"sam2": VideoMethod("SAM2 from the ground-truth mask", MASK)} if "sam2" in names else {}
    if "rpsam2" in names:
        block = _method_specs(["rpsam2"], args, engine.device)["rpsam2"].shift_block
        methods["sam2-click"] = VideoMethod("SAM2 from one click", CLICK)
        methods["rpsam2"] = VideoMethod("RP-SAM2: the same click refined by the shift block", CLICK, block)
    info = {"data_path": str(Path(args.data).resolve()), "format": args.fmt, "split": split or "all",
            "command": " ".join(shlex.quote(a) for a in [PROG, *argv])}
    progress = None if args.no_progress else (lambda items, n: tqdm(items, total=n, desc="seed frames"))
    try:
        result = evaluate_video(dataset, engine, video_engine, methods, args.max_distance, args.seeds, args.out,
                                info, progress)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"report: {result.report_path}\nscores: {result.scores_path}\nsummary: {result.summary_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
