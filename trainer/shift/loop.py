"""``train_shift_block``: one training run, from samples to the checkpoint directory the backend loads.

The run prepares the objects (``trainer.shift.objects``), steps a ``ShiftBlockTrainer``, validates
every ``val_interval`` steps, keeps the checkpoint with the best validation mDSC (without
validation data: the last one) and, at every validation point, the state to resume from.

Caching: SAM2 is frozen, so image embeddings (``trainer.feature_cache``) and candidate sets
(``trainer.shift.candidates``) are computed once per image/object and reused from ``cache_dir``
across epochs and runs -- except for the training objects of an augmented run (``augment``), whose
augmented images are encoded, and given candidates, every step; validation always uses the caches.

Resuming takes the block architecture, weights, optimiser state, step and history from
``resume.pt``; the other hyper-parameters are those passed in (normally the same).

Output directory (also the checkpoint the backend loads via ``RPSAM2_SHIFT_CHECKPOINT``)::

    shift_block.safetensors  shift_block.json   best weights + {config, hyper-parameters, metrics, data}
    metrics.csv              one row per validation (epoch): train loss terms, val mDSC, ...
    steps.csv                one row per optimiser step: loss terms, distance to nearest candidate
    curve.png                training loss and validation mDSC over steps
    training.json            the run: config, result, data summary, SAM2 identity, timing
    resume.pt                model + optimiser state of the last validation point (``resume_from``)
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
from rpsam2_backend.engine.sam2_engine import SAM2Engine
from trainer.feature_cache import FeatureCache, encoder_identity
from trainer.io.atomic import atomic_torch_save, move_files_into
from trainer.io.csv_log import append_csv, read_csv, write_csv
from trainer.io.plots import plot_curves
from trainer.shift.candidates import CandidateGenerator
from trainer.shift.config import TrainConfig, TrainResult
from trainer.shift.objects import data_summary, prepare_objects
from trainer.shift.trainer import ShiftBlockTrainer

log = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"
METRICS_FILE = "metrics.csv"
STEPS_FILE = "steps.csv"
CURVE_FILE = "curve.png"
TRAINING_FILE = "training.json"
STEP_FIELDS = ["step", "epoch", "loss", "dice", "distance", "outside", "cand_dist", "lr", "grad_norm"]
METRIC_FIELDS = [
    "epoch", "step", "train_loss", "train_dice", "train_distance", "train_outside", "train_cand_dist",
    "val_mdsc", "val_mdsc_sam2", "val_cand_dist", "best", "seconds",
]


def train_shift_block(
    dataset_train: Sequence[Any],
    dataset_val: Sequence[Any] | None,
    engine: SAM2Engine,
    config: TrainConfig | None = None,
    out_dir: str | Path = "shift-checkpoint",
    init_from: str | Path | None = None,
    feature_cache: FeatureCache | None = None,
    run_info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a shift block on ``dataset_train`` (``Sample``s), validate on ``dataset_val``.

    ``init_from``: a shift-block checkpoint directory to start from (fine-tuning the live version);
    its block configuration replaces ``config.shift``.  ``config.resume_from``: continue an
    interrupted run (weights, optimiser, step, history).  ``feature_cache``: share the caller's
    embedding cache (otherwise one is made from ``config.cache_dir``).  ``run_info``: what started the
    run (preset, overrides, command), written to ``training.json`` as "run".  Writes the directory
    described in the module docstring and returns the summary.
    """
    config = config or TrainConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    block = None
    if init_from is not None:
        block = ShiftBlock.load(init_from, engine.device)
        if block.config != config.shift:
            log.info("init_from %s: using its shift-block configuration %s", init_from, block.config)
            config = replace(config, shift=block.config)
    resume_state = _read_resume(config.resume_from) if config.resume_from else None
    if resume_state is not None and block is None:
        saved_shift = TrainConfig.from_dict(json.loads(resume_state["config"])).shift
        config = replace(config, shift=saved_shift)

    if feature_cache is not None and feature_cache.engine is not engine:
        raise ValueError("feature_cache belongs to another SAM2 engine")
    features = feature_cache or FeatureCache(engine, config.cache_dir, memory_bytes=config.feature_memory_mb << 20)
    encoded_before, disk_hits_before = features.encoded, features.disk_hits
    candidates = CandidateGenerator(
        engine, config.grid, config.eps, config.cache_dir, config.candidate_chunk, config.multimask
    )
    # The augmented path encodes and finds candidates per step: nothing to precompute for training.
    train_objects = prepare_objects(dataset_train, None if config.augment else features,
                                    None if config.augment else candidates, config.progress, "train")
    val_objects = prepare_objects(dataset_val or [], features, candidates, config.progress, "val")
    summary = {"train": data_summary(train_objects), "val": data_summary(val_objects),
               "train_dataset": getattr(dataset_train, "name", ""), "val_dataset": getattr(dataset_val, "name", "")}

    trainer = ShiftBlockTrainer(engine, config, train_objects, val_objects, features, block)
    if resume_state is not None:
        trainer.load_state(resume_state)
        log.info("resumed at step %d of %d", trainer.step, trainer.total_steps)
    log.info(
        "training a shift block with %s trainable parameters on %d objects (%d images); %d steps, "
        "%d per epoch; validation on %d objects",
        f"{trainer.block.num_parameters():,}", len(train_objects), summary["train"]["images"],
        trainer.total_steps, trainer.steps_per_epoch, len(val_objects),
    )
    if trainer.baseline_mdsc is None and val_objects:
        trainer.baseline_mdsc = trainer.validate(None)["mdsc"]
        log.info("plain SAM2 validation mDSC: %.4f", trainer.baseline_mdsc)

    sam2_info = {
        "config": engine.config, "checkpoint": engine.checkpoint, "random_weights": engine.random_weights,
        "encoder_identity": encoder_identity(engine),
    }
    # steps.csv grows by appending (a long run has ~10^5 steps); a resumed run drops the steps
    # after its resume point, which the interrupted run may have logged.
    kept = [{**r, "step": int(r["step"])} for r in read_csv(out_dir / STEPS_FILE) if r["step"] <= trainer.step]
    kept = kept if resume_state else []
    write_csv(out_dir / STEPS_FILE, STEP_FIELDS, kept)
    _run_loop(trainer, out_dir, summary, sam2_info, started)

    result = TrainResult(
        checkpoint_dir=out_dir,
        best_val_mdsc=trainer.best["val_mdsc"],
        baseline_val_mdsc=trainer.baseline_mdsc,
        best_step=int(trainer.best["step"]),
        best_epoch=int(trainer.best["epoch"]),
        steps=trainer.step,
        epochs=trainer.step / trainer.steps_per_epoch,
        history=trainer.history,
        seconds=time.time() - started,
        parameters=trainer.block.num_parameters(),
        data=summary,
    )
    write_csv(out_dir / METRICS_FILE, METRIC_FIELDS, trainer.history)
    plot_curves(read_csv(out_dir / STEPS_FILE), trainer.history, out_dir / CURVE_FILE, trainer.baseline_mdsc)
    training = {"run": dict(run_info or {}), "config": config.to_dict(), "result": result.to_dict(), "sam2": sam2_info,
                "cache": {"encoded": features.encoded - encoded_before,
                          "feature_disk_hits": features.disk_hits - disk_hits_before,
                          "candidates_computed": candidates.computed, "candidate_cache_hits": candidates.cache_hits}}
    (out_dir / TRAINING_FILE).write_text(json.dumps(training, indent=2, default=str))
    if not config.keep_resume_state:
        (out_dir / RESUME_FILE).unlink(missing_ok=True)
    return result


def _run_loop(trainer: ShiftBlockTrainer, out_dir: Path, summary: dict, sam2_info: dict, started: float) -> None:
    from tqdm.auto import tqdm

    config = trainer.config
    epoch_rows: list[dict[str, float]] = []
    bar = tqdm(total=trainer.total_steps, initial=trainer.step, disable=not config.progress, unit="step",
               desc="train shift block")
    try:
        while trainer.step < trainer.total_steps:
            row = trainer.train_step()
            epoch_rows.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", dice=f"{row['dice']:.3f}", dist=f"{row['distance']:.3f}",
                            out=f"{row['outside']:.3f}", refresh=False)
            if trainer.step % trainer.val_interval == 0 or trainer.step == trainer.total_steps:
                entry = _validation_point(trainer, epoch_rows, started)
                epoch_rows = []
                line = (
                    f"step {entry['step']} epoch {entry['epoch']:.2f}: loss {entry['train_loss']:.4f} "
                    f"val mDSC {_fmt(entry['val_mdsc'])} (SAM2 {_fmt(entry['val_mdsc_sam2'])})"
                    + (" *best*" if entry["best"] else "")
                )
                if config.progress:
                    bar.write(line)
                else:
                    log.info("%s", line)
                if entry["best"]:
                    _save_best(trainer, out_dir, summary, sam2_info)
                append_csv(out_dir / STEPS_FILE, STEP_FIELDS, trainer.pending_steps)
                trainer.pending_steps = []
                atomic_torch_save(trainer.state(), out_dir / RESUME_FILE)
                write_csv(out_dir / METRICS_FILE, METRIC_FIELDS, trainer.history)
    finally:
        bar.close()


def _validation_point(trainer: ShiftBlockTrainer, rows: list[dict[str, float]], started: float) -> dict[str, Any]:
    val = trainer.validate(trainer.block)
    mean = {k: float(np.mean([r[k] for r in rows])) if rows else float("nan")
            for k in ("loss", "dice", "distance", "outside", "cand_dist")}
    best_so_far = trainer.best["val_mdsc"]
    # Without validation data every validation point "improves": the last checkpoint is kept.
    is_best = val["mdsc"] is None or best_so_far is None or val["mdsc"] > best_so_far
    entry = {
        "epoch": trainer.step / trainer.steps_per_epoch, "step": trainer.step,
        "train_loss": mean["loss"], "train_dice": mean["dice"], "train_distance": mean["distance"],
        "train_outside": mean["outside"], "train_cand_dist": mean["cand_dist"],
        "val_mdsc": val["mdsc"], "val_mdsc_sam2": trainer.baseline_mdsc, "val_cand_dist": val["cand_dist"],
        "best": is_best, "seconds": time.time() - started,
    }
    if is_best:
        trainer.best = {"val_mdsc": val["mdsc"], "step": trainer.step,
                        "epoch": int(math.ceil(trainer.step / trainer.steps_per_epoch))}
    trainer.history.append(entry)
    return entry


def _save_best(trainer: ShiftBlockTrainer, out_dir: Path, summary: dict, sam2_info: dict) -> None:
    extra = {
        "trainer": "rpsam2-train",
        "created_at": time.time(),
        "step": trainer.step,
        "epoch": trainer.step / trainer.steps_per_epoch,
        "train_config": trainer.config.to_dict(),
        "metrics": {
            "val_mdsc": trainer.best["val_mdsc"],
            "val_mdsc_sam2": trainer.baseline_mdsc,
            "train_loss": trainer.history[-1]["train_loss"],
        },
        "data": summary,
        "sam2": sam2_info,
    }
    # Write beside the live files, then rename: the backend may load this directory at any time.
    tmp = out_dir / ".best-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.block.save(tmp, extra=extra)
    move_files_into(tmp, out_dir)


def _read_resume(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / RESUME_FILE
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

