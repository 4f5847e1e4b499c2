"""The paper's evaluation (§3.3, Table 1, Table 2, Fig. 1/5 heatmaps) on any loaded dataset.

Loop order: image outer, everything else inner.  Each image is encoded once (or read from a
``FeatureCache``) and then every table (1 point; 2, 3, 5 points), every method and every seed is
decoded from those features, so the encoder runs once per image for the whole evaluation and no
feature store is needed.  Per image and method the prompts of all objects and seeds go through the
decoder in one batched call (chunked at ``batch_size`` prompts).

Prompts: ``trainer.protocol.points_for_protocol`` -- an object's points depend only on the seed and
its id ``(sample_id, object_id)``, so every method gets the same points.  Sampled pixels
(col, row) become pixel centres (col + 0.5, row + 0.5) in the engine's continuous pixel frame.
One point decodes with ``multimask=True`` (best of three by predicted IoU, what the backend does
for one click); several points with ``multimask=False`` (SAM's rule: extra points disambiguate).

Methods (``MethodSpec``): plain SAM2; RP-SAM2 = the shift block moves the *first* point only (the
paper's Table 2 "shift first"); SAM2-FT = a fine-tuned mask decoder swapped in for that method and
swapped back afterwards.  A spec may combine a shift block and a decoder.

Objects whose mask has fewer pixels than a table's point count (an empty mask for Table 1) cannot
be prompted; they are left out of that table and listed in the report.  Frames without objects are
skipped without encoding.  Outputs: see ``trainer.eval_report``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpsam2_backend.engine.predictor import RPSAM2Predictor
from rpsam2_backend.engine.sam2_model import DecoderSwapper, ImageFeatures, SAM2Engine
from rpsam2_backend.engine.shift_block import ShiftBlock
from trainer.candidates import GridSpec
from trainer.datasets.base import Dataset
from trainer.feature_cache import FeatureCache
from trainer.metrics import dice, hd95
from trainer.protocol import WILCOXON, ObjectScore, Table, aggregate, pair_scores, paired_test, points_for_protocol

log = logging.getLogger(__name__)

MODES = ("table1", "table2", "both")
TABLE2_POINTS = (2, 3, 5)
OBJECT_KEY_SEPARATOR = "::"


def object_key(sample_id: str, object_id: str) -> str:
    """Printable id of one object of the dataset (CSV, report, ``heatmaps=`` selection)."""
    return f"{sample_id}{OBJECT_KEY_SEPARATOR}{object_id}"


# ------------------------------------------------------------------------------------------ methods


@dataclass
class MethodSpec:
    """One column of the tables: frozen SAM2, optionally a shift block and/or a fine-tuned decoder."""

    label: str
    shift_block: ShiftBlock | None = None
    decoder_dir: str | Path | None = None
    source: dict[str, Any] = field(default_factory=dict)  # provenance shown in the report

    @classmethod
    def sam2(cls) -> MethodSpec:
        return cls("SAM2")

    @classmethod
    def rpsam2(cls, shift_block: ShiftBlock, checkpoint: str | Path | None = None) -> MethodSpec:
        return cls("RP-SAM2", shift_block=shift_block, source={"shift_checkpoint": str(checkpoint or "in memory")})

    @classmethod
    def sam2ft(cls, decoder_dir: str | Path) -> MethodSpec:
        return cls("SAM2-FT", decoder_dir=decoder_dir, source={"decoder_checkpoint": str(decoder_dir)})

    @property
    def shifts(self) -> bool:
        return self.shift_block is not None

    def describe(self) -> str:
        parts = ["shift first point" if self.shifts else "no shift"]
        parts += [f"{k}={v}" for k, v in self.source.items()]
        return ", ".join(parts)


class _DecoderState:
    """Which mask decoder weights are loaded: the released ones (None) or a SAM2-FT directory."""

    def __init__(self, engine: SAM2Engine, decoder_dirs: Sequence[str | Path]) -> None:
        self.engine = engine
        self.swapper = DecoderSwapper(engine)  # snapshots the released decoder
        self.weights: dict[str, dict[str, torch.Tensor]] = {}
        try:
            for directory in decoder_dirs:
                # Read each file once; swapping per image then is an in-memory copy.
                self.swapper.load(directory)
                state = engine.model.sam_mask_decoder.state_dict()
                self.weights[str(directory)] = {k: v.detach().clone() for k, v in state.items()}
        finally:
            self.swapper.load(None)
        self.current: str | None = None

    def activate(self, directory: str | Path | None) -> None:
        key = None if directory is None else str(directory)
        if key == self.current:
            return
        if key is None:
            self.swapper.load(None)
        else:
            self.engine.model.sam_mask_decoder.load_state_dict(self.weights[key])
        self.current = key

    def restore(self) -> None:
        self.swapper.load(None)
        self.current = None


class _MethodRunner:
    """Decodes batches of prompt sets with one method: shift the first point, then decode."""

    def __init__(self, engine: SAM2Engine, spec: MethodSpec, batch_size: int) -> None:
        self.engine = engine
        self.spec = spec
        self.batch_size = max(1, int(batch_size))
        self.predictor: RPSAM2Predictor | None = None
        if spec.shift_block is not None:
            block = spec.shift_block.to(engine.device).eval()
            for p in block.parameters():
                p.requires_grad_(False)
            self.predictor = RPSAM2Predictor(engine, block)

    @torch.no_grad()
    def shift_first(self, features: ImageFeatures, first_px: torch.Tensor) -> torch.Tensor:
        """(B, 2) pixel points -> the shift block's points (a zero shift returns them bit-for-bit)."""
        assert self.predictor is not None
        moved = self.predictor.refine(features, first_px.to(self.engine.device))
        return moved.to(first_px.device, first_px.dtype)

    @torch.no_grad()
    def predict(self, features: ImageFeatures, points_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks (B, H, W) for B prompt sets ``points_px`` (B, N, 2) of positive points, and the first
        point each mask was decoded from (B, 2) -- moved by the shift block when the method has one."""
        points = np.asarray(points_px, dtype=np.float32)
        if points.ndim != 3 or points.shape[2] != 2:
            raise ValueError(f"points must be (B, N, 2), got {points.shape}")
        n = points.shape[1]
        masks, firsts = [], []
        for start in range(0, len(points), self.batch_size):
            coords = torch.from_numpy(points[start : start + self.batch_size].copy())
            if self.predictor is not None:
                coords[:, 0] = self.shift_first(features, coords[:, 0])
            labels = torch.ones(coords.shape[:2], dtype=torch.int)
            chunk, _ = self.engine.decode_masks(
                features, coords.to(self.engine.device), labels, multimask=n == 1
            )
            masks.append(chunk)
            firsts.append(coords[:, 0].numpy().astype(np.float64))
        return np.concatenate(masks), np.concatenate(firsts)


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class TableSpec:
    key: str
    n_points: int
    title: str


@dataclass
class ScoreRow:
    """One CSV row: a method's prediction for one object and seed in one table."""

    table: str
    n_points: int
    method: str
    seed: int
    sample_id: str
    object_id: str
    class_name: str
    dice: float
    hd95: float
    empty_pred: bool
    first_inside_gt: bool  # the (possibly shifted) first point lies on the object
    points: list[list[float]]  # the protocol's points, before any shift
    first_used: list[float]  # the first point the decoder saw

    def object_score(self) -> ObjectScore:
        return ObjectScore(self.method, self.seed, (self.sample_id, self.object_id), self.class_name,
                           self.dice, self.hd95)


@dataclass
class HeatmapResult:
    key: str
    class_name: str
    png: str
    grid: np.ndarray  # (K, 2) pixel-centre points (x, y)
    dice: dict[str, np.ndarray]  # method -> (K,) Dice of each grid point's prediction


@dataclass
class EvaluationResult:
    out_dir: Path
    tables: dict[str, Table]
    table_specs: list[TableSpec]
    rows: list[ScoreRow]
    paired: dict[str, list[dict[str, Any]]]
    heatmaps: list[HeatmapResult]
    excluded: dict[str, list[str]]  # table key -> object keys too small to prompt
    info: dict[str, Any]
    report_path: Path
    scores_path: Path
    summary_path: Path


def table_specs(mode: str, n_points: int = 1, table2_points: Sequence[int] = TABLE2_POINTS) -> list[TableSpec]:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if n_points < 1 or any(n < 1 for n in table2_points):
        raise ValueError("point counts must be >= 1")
    specs = []
    if mode in ("table1", "both"):
        word = "point" if n_points == 1 else "points"
        specs.append(TableSpec("table1", n_points, f"Table 1: {n_points} random positive {word} per object"))
    if mode in ("table2", "both"):
        for n in table2_points:
            specs.append(TableSpec(f"table2_{n}pt", n, f"Table 2: {n} random positive points per object"))
    return specs


@dataclass(frozen=True)
class EvalConfig:
    """What one evaluation computes and how; the defaults are the paper's Table 1 protocol (§3.3).

    Invalid seeds, modes or point counts raise ValueError here, before any image is encoded.
    """

    seeds: int | Sequence[int] = 10  # a count (seeds 0..N-1) or explicit seeds
    n_points: int = 1  # random positive points per object in Table 1
    mode: str = "table1"  # "table1", "table2" or "both" (one pass, one encode per image)
    table2_points: Sequence[int] = TABLE2_POINTS  # point counts of Table 2 (no shift vs shift first)
    heatmaps: int | Sequence[str] = 0  # the first N objects, or object keys / sample ids (``select_heatmaps``)
    heatmap_grid: GridSpec | None = None  # grid of the heatmaps; None: about 256 points per object
    test: str = WILCOXON  # paired test of each method vs the baseline
    batch_size: int = 64  # prompts per decoder call
    progress: bool = True

    def __post_init__(self) -> None:
        seeds = list(range(self.seeds)) if isinstance(self.seeds, int) else [int(s) for s in self.seeds]
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"need at least one seed and no duplicates, got {self.seeds!r}")
        # Lists become tuples: a frozen config should not change through a list the caller still holds.
        if not isinstance(self.seeds, int):
            object.__setattr__(self, "seeds", tuple(seeds))
        if not isinstance(self.heatmaps, int):
            object.__setattr__(self, "heatmaps", tuple(self.heatmaps))
        object.__setattr__(self, "table2_points", tuple(self.table2_points))
        self.table_specs()  # raises on an unknown mode or a point count < 1

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def table_specs(self) -> list[TableSpec]:
        return table_specs(self.mode, self.n_points, self.table2_points)

    def grid(self) -> GridSpec:
        return self.heatmap_grid or GridSpec(target_points=256)


def select_heatmaps(dataset: Dataset, heatmaps: int | Sequence[str]) -> set[str]:
    """``heatmaps``: the first N objects in dataset order, or object keys / sample ids."""
    if isinstance(heatmaps, int):
        keys = [object_key(s.sample_id, o.object_id) for s in dataset for o in s.objects]
        return set(keys[: max(0, heatmaps)])
    wanted = set(heatmaps)
    chosen = {
        object_key(s.sample_id, o.object_id)
        for s in dataset
        for o in s.objects
        if object_key(s.sample_id, o.object_id) in wanted or s.sample_id in wanted
    }
    found_samples = {s.sample_id for s in dataset}
    unknown = [w for w in wanted if w not in chosen and w not in found_samples]
    if unknown:
        raise ValueError(f"heatmap objects not in the dataset: {sorted(unknown)[:5]} "
                         f"(use SAMPLE_ID{OBJECT_KEY_SEPARATOR}OBJECT_ID or a sample id)")
    return chosen


@contextmanager
def _progress(total: int, enabled: bool, desc: str) -> Iterator[Any]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def _features_getter(engine: SAM2Engine, feature_cache: FeatureCache | None):
    if feature_cache is None:
        return engine.encode
    return feature_cache.get


def _inside(mask: np.ndarray, xy: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    col = np.floor(xy[:, 0]).astype(np.int64)
    row = np.floor(xy[:, 1]).astype(np.int64)
    ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    out = np.zeros(len(xy), dtype=bool)
    out[ok] = mask[row[ok], col[ok]]
    return out


# ------------------------------------------------------------------------------------------ evaluate


def evaluate(
    dataset: Dataset,
    engine: SAM2Engine,
    methods: Mapping[str, MethodSpec],
    config: EvalConfig | None = None,
    out_dir: str | Path = "eval",
    *,
    feature_cache: FeatureCache | None = None,
    info: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """Score ``methods`` on every object of ``dataset`` with the §3.3 protocol; write the outputs.

    ``config``: seeds, tables, heatmaps, test, batch size (``EvalConfig``; default: Table 1, 10 seeds).
    ``feature_cache``: a ``FeatureCache`` to reuse features across runs.
    ``info``: provenance for the report (data path, format, split, command line, ...).
    """
    from trainer import eval_heatmaps, eval_report

    config = config or EvalConfig()
    if not methods:
        raise ValueError("no methods to evaluate")
    seed_list = config.seed_list
    specs = config.table_specs()
    if len(dataset) == 0 or not any(s.objects for s in dataset):
        raise ValueError(f"dataset {dataset.name!r} has no objects to evaluate")
    heatmap_keys = select_heatmaps(dataset, config.heatmaps)
    grid_spec = config.grid()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runners = {name: _MethodRunner(engine, spec, config.batch_size) for name, spec in methods.items()}
    # Methods on the released decoder first, so each image swaps decoders at most twice.
    order = sorted(methods, key=lambda name: methods[name].decoder_dir is not None)
    decoders = _DecoderState(engine, sorted({str(s.decoder_dir) for s in methods.values() if s.decoder_dir}))
    get_features = _features_getter(engine, feature_cache)

    rows: list[ScoreRow] = []
    excluded: dict[str, list[str]] = {spec.key: [] for spec in specs}
    heatmap_results: list[HeatmapResult] = []
    encodes_before = engine.encode_count
    try:
        with _progress(len(dataset), config.progress, "evaluate") as bar:
            for sample in dataset:
                bar.set_postfix_str(str(sample.sample_id)[-40:], refresh=False)
                objects = [(obj.object_id, obj.class_name, obj.load()) for obj in sample.objects]
                if not objects:
                    bar.update(1)
                    continue
                image = sample.load_image()
                for object_id, _, mask in objects:
                    if mask.shape != image.shape[:2]:
                        raise ValueError(f"{object_key(sample.sample_id, object_id)}: mask {mask.shape} "
                                         f"does not match image {image.shape[:2]}")
                features = get_features(image)
                for spec in specs:
                    rows += _score_image(sample.sample_id, objects, features, spec, seed_list, order,
                                         runners, decoders, excluded[spec.key])
                for object_id, class_name, mask in objects:
                    key = object_key(sample.sample_id, object_id)
                    if key in heatmap_keys and mask.any():
                        heatmap_results.append(eval_heatmaps.object_heatmap(
                            key, class_name, image, mask, features, order, methods, runners, decoders,
                            grid_spec, out / "heatmaps"))
                bar.update(1)
    finally:
        decoders.restore()

    tables, paired = _aggregate(rows, specs, methods, dataset.classes(), config.test)
    run_info = {
        "dataset": dataset.name,
        "samples": len(dataset),
        "objects": sum(len(s.objects) for s in dataset),
        "class_counts": dataset.class_counts(),
        "seeds": seed_list,
        "sam2_config": engine.config,
        "sam2_checkpoint": engine.checkpoint or "RANDOM WEIGHTS (smoke test only: numbers are meaningless)",
        "device": str(engine.device),
        "encoder_calls": engine.encode_count - encodes_before,
        "methods": {name: {"label": s.label, "description": s.describe()} for name, s in methods.items()},
        "batch_size": config.batch_size,
        "heatmap_grid": grid_spec.key() if heatmap_keys else "",
        **dict(info or {}),
    }
    result = EvaluationResult(
        out_dir=out, tables=tables, table_specs=[s for s in specs if s.key in tables], rows=rows, paired=paired,
        heatmaps=heatmap_results, excluded=excluded, info=run_info,
        report_path=out / "report.md", scores_path=out / "scores.csv", summary_path=out / "summary.json",
    )
    eval_report.write_outputs(result, methods)
    return result


def _score_image(
    sample_id: str,
    objects: list[tuple[str, str, np.ndarray]],
    features: ImageFeatures,
    spec: TableSpec,
    seeds: list[int],
    order: list[str],
    runners: Mapping[str, _MethodRunner],
    decoders: _DecoderState,
    excluded: list[str],
) -> list[ScoreRow]:
    usable = []
    for object_id, class_name, mask in objects:
        if int(mask.sum()) < spec.n_points:
            excluded.append(object_key(sample_id, object_id))
        else:
            usable.append((object_id, class_name, mask))
    if not usable:
        return []
    ids: list[Hashable] = [(sample_id, object_id) for object_id, _, _ in usable]
    points = points_for_protocol([(i, m) for i, (_, _, m) in zip(ids, usable, strict=True)], seeds, spec.n_points)
    # Batch layout: seed-major, then object; pixel indices -> pixel centres.
    batch = np.stack([points[seed][i] for seed in seeds for i in ids]) + 0.5
    where = [(seed, k) for seed in seeds for k in range(len(usable))]

    rows = []
    for name in order:
        runner = runners[name]
        decoders.activate(runner.spec.decoder_dir)
        masks, firsts = runner.predict(features, batch)
        for b, (seed, k) in enumerate(where):
            object_id, class_name, gt = usable[k]
            pred = masks[b]
            rows.append(ScoreRow(
                table=spec.key, n_points=spec.n_points, method=name, seed=seed, sample_id=sample_id,
                object_id=object_id, class_name=class_name, dice=dice(pred, gt), hd95=hd95(pred, gt),
                empty_pred=not bool(pred.any()), first_inside_gt=bool(_inside(gt, firsts[b : b + 1])[0]),
                points=batch[b].tolist(), first_used=firsts[b].tolist(),
            ))
    return rows


def _aggregate(
    rows: list[ScoreRow],
    specs: list[TableSpec],
    methods: Mapping[str, MethodSpec],
    class_order: list[str],
    test: str,
) -> tuple[dict[str, Table], dict[str, list[dict[str, Any]]]]:
    """Per table: ``protocol.aggregate`` (per seed first) and paired tests of each method vs the baseline."""
    baseline = "sam2" if "sam2" in methods else next(iter(methods))
    tables: dict[str, Table] = {}
    paired: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        scores = [r.object_score() for r in rows if r.table == spec.key]
        if not scores:
            log.warning("%s: no object is large enough for %d points; table left out", spec.key, spec.n_points)
            continue
        tables[spec.key] = aggregate(scores, class_order)
        paired[spec.key] = []
        for name in methods:
            if name == baseline:
                continue
            for metric in ("dice", "hd95"):
                a, b = pair_scores(scores, name, baseline, metric)
                res = paired_test(a, b, test)
                paired[spec.key].append({"method": name, "baseline": baseline, "metric": metric, **res,
                                         "mean_difference": float(np.mean(np.subtract(a, b)))})
    return tables, paired


def grid_scores(
    runner: _MethodRunner, features: ImageFeatures, points_px: np.ndarray, gt: np.ndarray
) -> np.ndarray:
    """Dice of each single-point prediction, (K,) -- one heatmap's values."""
    masks, _ = runner.predict(features, points_px[:, None, :])
    return np.array([dice(m, gt) for m in masks], dtype=np.float64)
