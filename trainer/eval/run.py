"""The paper's evaluation (§3.3, Table 1, Table 2, Fig. 1/5 heatmaps) on any loaded dataset.

Loop order: image outer, everything else inner.  Each image is encoded once (or read from a
``FeatureCache``) and then every table (1 point; 2, 3, 5 points), every method and every seed is
decoded from those features, so the encoder runs once per image for the whole evaluation and no
feature store is needed.  Baselines (``MethodSpec.engine``: other SAM2-architecture models) have their
own encoders: each encodes each image once too, and decodes the very same prompts.  Per image and
method the prompts of all objects and seeds go through the decoder in one batched call (chunked at
``batch_size`` prompts).

Prompts: ``trainer.prompts.points_for_protocol`` -- an object's points depend only on the seed and
its id ``(sample_id, object_id)``, so every method gets the same points.  Sampled pixels
(col, row) become pixel centres (col + 0.5, row + 0.5) in the engine's continuous pixel frame.
One point decodes with ``multimask=True`` (best of three by predicted IoU, what the backend does
for one click); several points with ``multimask=False`` (SAM's rule: extra points disambiguate).

Methods: see ``trainer.eval.methods``.

Objects whose mask has fewer pixels than a table's point count (an empty mask for Table 1) cannot
be prompted; they are left out of that table and listed in the report.  Frames without objects are
skipped without encoding.  Outputs: see ``trainer.eval.report``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rpsam2_backend.engine.features import ImageFeatures
from rpsam2_backend.engine.sam2_engine import SAM2Engine
from trainer.datasets.base import Dataset
from trainer.eval.config import EvalConfig, select_heatmaps
from trainer.eval.heatmaps import object_heatmap
from trainer.eval.methods import DecoderState, MethodRunner, MethodSpec
from trainer.eval.protocol import (
    PAIRING_OBJECT_MEANS,
    PAIRING_SEED_OBJECT,
    Table,
    aggregate,
    pair_object_means,
    pair_scores,
    paired_test,
)
from trainer.eval.report import write_outputs
from trainer.eval.results import EvaluationResult, HeatmapResult, ScoreRow, TableSpec, object_key
from trainer.feature_cache import FeatureCache
from trainer.prompts import points_for_protocol
from trainer.scores import dice, hd95

log = logging.getLogger(__name__)


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
    runners = {name: MethodRunner(spec.engine or engine, spec, config.batch_size) for name, spec in methods.items()}
    baselines = {id(spec.engine): spec.engine for spec in methods.values()
                 if spec.engine is not None and spec.engine is not engine}
    baseline_encodes = {key: e.encode_count for key, e in baselines.items()}
    # Methods on the released decoder first, so each image swaps decoders at most twice.
    order = sorted(methods, key=lambda name: methods[name].decoder_dir is not None)
    decoders = DecoderState(engine, sorted({str(s.decoder_dir) for s in methods.values() if s.decoder_dir}))
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
                main_features = get_features(image)
                by_engine = {key: e.encode(image) for key, e in baselines.items()}  # once per image and model
                features = {name: by_engine[id(m.engine)] if id(m.engine) in by_engine else main_features
                            for name, m in methods.items()}
                for spec in specs:
                    rows += _score_image(sample.sample_id, objects, features, spec, seed_list, order,
                                         runners, decoders, excluded[spec.key])
                for object_id, class_name, mask in objects:
                    key = object_key(sample.sample_id, object_id)
                    if key in heatmap_keys and mask.any():
                        heatmap_results.append(object_heatmap(
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
        "baseline_encoder_calls": {
            name: m.engine.encode_count - baseline_encodes[id(m.engine)]
            for name, m in methods.items() if id(m.engine) in baselines
        },
        "methods": {name: {"label": s.label, "description": s.describe(),
                           "trainable_parameters": s.trainable_parameters(engine)}
                    for name, s in methods.items()},
        "batch_size": config.batch_size,
        "heatmap_grid": grid_spec.key() if heatmap_keys else "",
        **dict(info or {}),
    }
    result = EvaluationResult(
        out_dir=out, tables=tables, table_specs=[s for s in specs if s.key in tables], rows=rows, paired=paired,
        heatmaps=heatmap_results, excluded=excluded, info=run_info,
        report_path=out / "report.md", scores_path=out / "scores.csv", summary_path=out / "summary.json",
    )
    write_outputs(result, methods)
    return result


def _score_image(
    sample_id: str,
    objects: list[tuple[str, str, np.ndarray]],
    features: Mapping[str, ImageFeatures],
    spec: TableSpec,
    seeds: list[int],
    order: list[str],
    runners: Mapping[str, MethodRunner],
    decoders: DecoderState,
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
        masks, firsts = runner.predict(features[name], batch)
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
                # Headline: per-object means over seeds (independent units); then every (seed, object).
                for pairing, pair in ((PAIRING_OBJECT_MEANS, pair_object_means), (PAIRING_SEED_OBJECT, pair_scores)):
                    a, b = pair(scores, name, baseline, metric)
                    res = paired_test(a, b, test)
                    paired[spec.key].append({
                        "method": name, "baseline": baseline, "metric": metric, "pairing": pairing,
                        "headline": pairing == PAIRING_OBJECT_MEANS, **res,
                        "mean_difference": float(np.mean(np.subtract(a, b)))})
    return tables, paired

