"""Fig. 4(b): the ablation -- loss terms, refined points per object, layers -- trained and evaluated alike.

Variants (each changes one thing of the base training configuration, the paper's full method):

- loss terms: L_dice alone (β = γ = 0); L_dice + L_dist (γ = 0); L_dice + L_dist + L_out (the paper's);
- refined points per object during training: 6, 8, 10 (the paper's);
- shift-block layers: 2, 6 (the paper's).

Variants with the same configuration (the full method appears in every group) are trained once.  Every
trained block is evaluated on the test split in ONE evaluation pass together with plain SAM2 (same
prompts, one encode per image), with the paper's protocol; the table and the plot show mDSC and mHD95
("Avg." rows, ± the mean of the class stds) and each block's trainable parameters.

Outputs in ``out_dir``: ``runs/<id>/`` (each shift checkpoint), ``eval/`` (the joint evaluation),
``ablation.json``, ``ablation.md`` and ``ablation.png``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
from rpsam2_backend.engine.sam2_engine import SAM2Engine
from trainer.datasets.base import Dataset
from trainer.eval.config import EvalConfig
from trainer.eval.methods import MethodSpec, count_parameters
from trainer.eval.run import evaluate
from trainer.feature_cache import FeatureCache
from trainer.io.plots import plot_groups
from trainer.shift.config import TrainConfig
from trainer.shift.loop import train_shift_block
from trainer.studies.summary import method_summary, pm

log = logging.getLogger(__name__)

# loss variant -> (α, β, γ); the paper's weights are 1.0, 0.1, 1.0
LOSS_VARIANTS: dict[str, tuple[float, float, float]] = {
    "dice": (1.0, 0.0, 0.0),
    "dice+dist": (1.0, 0.1, 0.0),
    "dice+dist+out": (1.0, 0.1, 1.0),
}
LOSS_LABELS = {"dice": "L_dice", "dice+dist": "+ L_dist", "dice+dist+out": "+ L_out"}
GROUPS = ("loss terms", "refined points per object", "layers")


@dataclass(frozen=True)
class Variant:
    group: str
    label: str
    config: TrainConfig


def ablation_variants(
    base: TrainConfig,
    losses: Sequence[str] = tuple(LOSS_VARIANTS),
    points: Sequence[int] = (6, 8, 10),
    layers: Sequence[int] = (2, 6),
) -> list[Variant]:
    """The variants of the module docstring, each the base with one change (losses keep the base's θ)."""
    unknown = [name for name in losses if name not in LOSS_VARIANTS]
    if unknown:
        raise ValueError(f"unknown loss variants {unknown}; choose from {list(LOSS_VARIANTS)}")
    if any(n < 1 for n in (*points, *layers)):
        raise ValueError("points and layers must be >= 1")
    out = []
    for name in losses:
        alpha, beta, gamma = LOSS_VARIANTS[name]
        out.append(Variant(GROUPS[0], LOSS_LABELS[name], replace(base, alpha=alpha, beta=beta, gamma=gamma)))
    for n in points:
        out.append(Variant(GROUPS[1], f"{n} points", replace(base, points_per_object=n)))
    for n in layers:
        out.append(Variant(GROUPS[2], f"{n} layers", replace(base, shift=replace(base.shift, layers=n))))
    return out


def _config_key(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, default=str)


def run_ablation(
    train: Dataset,
    val: Dataset,
    test: Dataset,
    engine: SAM2Engine,
    variants: Sequence[Variant],
    evaluation: EvalConfig,
    out_dir: str | Path,
    feature_cache: FeatureCache | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train every distinct variant once, evaluate all with SAM2 in one pass, write the table and plot."""
    if not variants:
        raise ValueError("no ablation variants")
    if not any(s.objects for s in test):
        raise ValueError("the test split has no objects to evaluate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    features = feature_cache or FeatureCache(engine, variants[0].config.cache_dir)
    runs: dict[str, str] = {}  # config key -> run id
    run_of: list[str] = []
    for v in variants:
        key = _config_key(v.config)
        if key not in runs:
            run_id = f"run{len(runs) + 1}"
            runs[key] = run_id
            log.info("ablation %s: %s / %s", run_id, v.group, v.label)
            train_shift_block(train, val, engine, v.config, out / "runs" / run_id, feature_cache=features)
        run_of.append(runs[key])
    methods: dict[str, MethodSpec] = {"sam2": MethodSpec.sam2()}
    for run_id in dict.fromkeys(run_of):
        members = [f"{v.group}: {v.label}" for v, r in zip(variants, run_of, strict=True) if r == run_id]
        block = ShiftBlock.load(out / "runs" / run_id, engine.device)
        methods[run_id] = MethodSpec(f"RP-SAM2 {run_id}", shift_block=block,
                                     source={"variants": "; ".join(members), "checkpoint": str(out / "runs" / run_id)})
    result = evaluate(test, engine, methods, replace(evaluation, mode="table1"), out / "eval",
                      feature_cache=features, info={"study": "ablation"})
    table = result.tables["table1"]
    rows = [{"group": v.group, "variant": v.label, "run": r, "parameters": count_parameters(methods[r].shift_block),
             "config": {"alpha": v.config.alpha, "beta": v.config.beta, "gamma": v.config.gamma,
                        "points_per_object": v.config.points_per_object, "layers": v.config.shift.layers},
             **method_summary(table, r)}
            for v, r in zip(variants, run_of, strict=True)]
    ablation = {"info": dict(info or {}), "sam2": method_summary(table, "sam2"), "rows": rows,
                "runs_trained": len(runs), "report": str(result.report_path)}
    write_outputs(ablation, out)
    return ablation


def write_outputs(ablation: dict[str, Any], out: Path) -> None:
    (out / "ablation.json").write_text(json.dumps(ablation, indent=1, default=str))
    sam2 = ablation["sam2"]
    lines = ["# Fig. 4(b): ablation of RP-SAM2\n",
             "Each variant changes one thing of the full method; all are evaluated in one pass with the paper's "
             "protocol (mDSC / mHD95 = the Avg. rows, ± = mean of the class stds across prompt seeds).\n",
             "| group | variant | run | trainable parameters | mDSC(%)↑ | mHD95↓ |", "|---|---|---|---|---|---|",
             f"| – | SAM2 | – | – | {pm(sam2['mdsc'], sam2['mdsc_std'])} | {pm(sam2['mhd95'], sam2['mhd95_std'])} |"]
    for r in ablation["rows"]:
        lines.append(f"| {r['group']} | {r['variant']} | {r['run']} | {r['parameters'] / 1e6:.2f}M "
                     f"| {pm(r['mdsc'], r['mdsc_std'])} | {pm(r['mhd95'], r['mhd95_std'])} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n\n![Fig. 4(b)](ablation.png)\n")
    groups = []
    for group in dict.fromkeys(r["group"] for r in ablation["rows"]):
        groups.append((group, [(r["variant"], r["mdsc"], r["mdsc_std"]) for r in ablation["rows"]
                               if r["group"] == group]))
    plot_groups(out / "ablation.png", groups, "mDSC (%)", "RP-SAM2 ablation (Fig. 4b)",
                baseline=("SAM2", sam2["mdsc"], sam2["mdsc_std"]))
