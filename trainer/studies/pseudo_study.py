"""Fig. 4(a): shift block on X % of a dataset's training split, pseudo-labels for the rest, SAM2-FT on them.

For every X (default 5, 10, 20, 40, 60 % -- the paper's "5-60 %"):

1. take a stratified X % of the training split (``Dataset.stratified_subset``, seeded) as labelled and
   keep the rest unlabelled;
2. train a shift block on the labelled part (``train_shift_block``; from ``init_from`` when given --
   the paper fine-tunes its Cataract-1K block -- and validated on the validation split);
3. pseudo-label the unlabelled part: one random click per object (a uniformly drawn pixel of its ground
   truth, seeded by the object), segmented once by plain SAM2 and once by RP-SAM2 with the new block
   (``pseudo_label_samples``); the ground truth of that part is used for nothing else;
4. fine-tune SAM2's mask decoder on each set of pseudo-masks (``train_decoder``: SAM2-FT with SAM2's loss);
5. evaluate on the test split with the paper's protocol, in one pass: SAM2, RP-SAM2, SAM2-FT on SAM2's
   pseudo-masks and SAM2-FT on RP-SAM2's pseudo-masks (SAM2-FT decodes the click as given).

X = 0 (the zero-shot point of Fig. 4(a)) needs ``init_from``: no shift training, the whole training split
is pseudo-labelled.  The curve's value is the "Avg." mDSC (the mean over instrument classes) with the
paper's ± (the mean of the class stds across the prompt seeds).  Image features are computed once per
image for the whole study (one ``FeatureCache``).

Outputs in ``out_dir``: ``x<NN>/`` (shift checkpoint, decoders, evaluation of each X), ``study.json``,
``study.csv``, ``study.md`` (the table) and ``study.png`` (the plot).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
from rpsam2_backend.engine.predictor import RPSAM2Predictor
from rpsam2_backend.engine.sam2_engine import SAM2Engine
from trainer.datasets.base import Dataset
from trainer.decoder_ft import DecoderFTConfig, train_decoder
from trainer.eval.config import EvalConfig
from trainer.eval.methods import MethodSpec
from trainer.eval.run import evaluate
from trainer.feature_cache import FeatureCache
from trainer.io.plots import plot_over_x
from trainer.pseudo_labels import pseudo_label_samples
from trainer.shift.config import TrainConfig
from trainer.shift.loop import train_shift_block
from trainer.studies.summary import method_summary, pm

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS = (5.0, 10.0, 20.0, 40.0, 60.0)
METHODS = {  # key -> column label
    "sam2": "SAM2",
    "rpsam2": "RP-SAM2",
    "sam2ft_sam2": "SAM2-FT (SAM2 pseudo-masks)",
    "sam2ft_rpsam2": "SAM2-FT (RP-SAM2 pseudo-masks)",
}


@dataclass(frozen=True)
class PseudoStudyConfig:
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS  # percent of the training split that is labelled
    shift: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=50))  # the paper: 50 epochs each
    decoder: DecoderFTConfig = field(default_factory=DecoderFTConfig)
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(seeds=10, progress=False))
    seed: int = 0  # the subsets and the pseudo-label clicks

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0.0 <= f < 100.0 for f in self.fractions):
            raise ValueError(f"fractions are percentages in [0, 100), got {self.fractions}")
        if len(set(self.fractions)) != len(self.fractions):
            raise ValueError(f"a fraction is listed twice: {self.fractions}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["evaluation"] = {"seeds": self.evaluation.seed_list, "test": self.evaluation.test}
        return out


def _tag(fraction: float) -> str:
    return f"x{fraction:g}".replace(".", "p")


def run_pseudo_study(
    train: Dataset,
    val: Dataset,
    test: Dataset,
    engine: SAM2Engine,
    config: PseudoStudyConfig,
    out_dir: str | Path,
    init_from: str | Path | None = None,
    feature_cache: FeatureCache | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the study (module docstring) and write its outputs; returns what ``study.json`` holds."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if 0.0 in config.fractions and init_from is None:
        raise ValueError("the 0 % point (zero-shot) needs a shift block to start from (init_from)")
    if not any(s.objects for s in test):
        raise ValueError("the test split has no objects to evaluate")
    features = feature_cache or FeatureCache(engine, config.shift.cache_dir)
    rows = []
    for fraction in sorted(config.fractions):
        tag = _tag(fraction)
        log.info("pseudo-label study: %g %% labelled", fraction)
        if fraction == 0.0:
            labelled, rest = train[:0], train
        else:
            labelled, rest = train.stratified_subset(fraction / 100.0, config.seed)
        if not any(s.objects for s in rest):
            raise ValueError(f"{fraction:g} %: nothing left to pseudo-label ({len(rest)} images)")
        if labelled and any(s.objects for s in labelled):
            shift_dir = out / tag / "shift"
            train_shift_block(labelled, val, engine, config.shift, shift_dir,
                              init_from=init_from, feature_cache=features)
            block_dir: Path = shift_dir
        elif init_from is not None:
            block_dir = Path(init_from)
        else:
            raise ValueError(f"{fraction:g} %: no labelled objects to train the shift block on")
        block = ShiftBlock.load(block_dir, engine.device)

        pseudo = pseudo_label_samples(
            rest, {"sam2": RPSAM2Predictor(engine), "rpsam2": RPSAM2Predictor(engine, block)}, features, config.seed)
        decoders: dict[str, Path] = {}
        for source, samples in pseudo.samples.items():
            if not samples:
                raise ValueError(f"{fraction:g} %: every {source} pseudo-mask was empty; nothing to fine-tune on")
            decoders[source] = out / tag / f"decoder-{source}"
            train_decoder(samples, engine, features, config.decoder, decoders[source])

        methods = {
            "sam2": MethodSpec(METHODS["sam2"]),
            "rpsam2": MethodSpec.rpsam2(block, block_dir),
            "sam2ft_sam2": MethodSpec(METHODS["sam2ft_sam2"], decoder_dir=decoders["sam2"],
                                      source={"decoder_checkpoint": str(decoders["sam2"])}),
            "sam2ft_rpsam2": MethodSpec(METHODS["sam2ft_rpsam2"], decoder_dir=decoders["rpsam2"],
                                        source={"decoder_checkpoint": str(decoders["rpsam2"])}),
        }
        result = evaluate(test, engine, methods, replace(config.evaluation, mode="table1"), out / tag / "eval",
                          feature_cache=features, info={"study": "pseudo-label", "fraction_percent": fraction})
        table = result.tables["table1"]
        rows.append({
            "fraction_percent": fraction,
            "labelled_images": len(labelled), "pseudo_labelled_images": len(rest),
            "shift_checkpoint": str(block_dir), "pseudo_masks": pseudo.summary(),
            "methods": {name: method_summary(table, name) for name in METHODS},
            "report": str(result.report_path),
        })
    study = {"config": config.to_dict(), "init_from": str(init_from) if init_from else None,
             "info": dict(info or {}), "methods": METHODS, "rows": rows}
    write_outputs(study, out)
    return study


def write_outputs(study: dict[str, Any], out: Path) -> None:
    rows = study["rows"]
    (out / "study.json").write_text(json.dumps(study, indent=1, default=str))
    with open(out / "study.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fraction_percent", "method", "mdsc", "mdsc_std", "mhd95", "mhd95_std", "w_mdsc",
                         "w_mdsc_std"])
        for r in rows:
            for name, m in r["methods"].items():
                writer.writerow([r["fraction_percent"], name, m["mdsc"], m["mdsc_std"], m["mhd95"], m["mhd95_std"],
                                 m["w_mdsc"], m["w_mdsc_std"]])
    header = ["% labelled", *[f"{label} mDSC(%)↑" for label in METHODS.values()],
              "pseudo-mask Dice vs GT: SAM2 / RP-SAM2"]
    lines = ["# Fig. 4(a): shift block on X % of the training split, SAM2-FT on pseudo-masks of the rest\n",
             "mDSC = the Avg. row of Table 1 (mean over instrument classes), ± = mean of the class stds across "
             "the prompt seeds. SAM2 and SAM2-FT decode the click as given; RP-SAM2 shifts it.\n",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [f"{r['fraction_percent']:g}"]
        cells += [pm(r["methods"][k]["mdsc"], r["methods"][k]["mdsc_std"]) for k in METHODS]
        quality = [r["pseudo_masks"][k]["mean_dice_vs_ground_truth"] for k in ("sam2", "rpsam2")]
        cells.append(" / ".join("–" if q is None else f"{100 * q:.1f}" for q in quality))
        lines.append("| " + " | ".join(cells) + " |")
    (out / "study.md").write_text("\n".join(lines) + "\n\n![Fig. 4(a)](study.png)\n")
    x = [r["fraction_percent"] for r in rows]
    series = {label: ([r["methods"][k]["mdsc"] for r in rows], [r["methods"][k]["mdsc_std"] for r in rows])
              for k, label in METHODS.items()}
    plot_over_x(out / "study.png", x, series, "% of the training split used to train the shift block",
                "mDSC (%)", "Pseudo-masks from SAM2 vs RP-SAM2 for SAM2-FT (Fig. 4a)")
