"""Shift-block training (paper §3.2): frozen SAM2, trainable shift block, compound loss.

One optimiser step:
  1. take ``batch_size`` objects (default 4) of a seeded per-epoch permutation of all training
     objects (an epoch = every object once);
  2. for each object draw ``points_per_object`` (default 10) clicks uniformly inside its ground
     truth -- a uniformly chosen mask pixel plus a uniform sub-pixel offset, i.e. uniform over the
     object's area ("the user clicks anywhere on the instrument");
  3. refine every click with the shift block (``RPSAM2Predictor.refine``), decode the refined
     clicks with frozen SAM2 in one decoder call per image size, keep the mask SAM2 itself would
     return for one click (``multimask=True``, best predicted IoU: what the backend serves; the
     gradient flows through the chosen mask's logits into the refined coordinates);
  4. L = α·Dice + β·Dist + γ·Out (``trainer.losses.CompoundLoss``) at the original resolution,
     against the object's candidate set G (``trainer.candidates``), averaged over all clicks;
  5. AdamW step with gradient-norm clipping.

Validation (after each epoch, or every ``val_every`` steps; with a ``steps`` budget and no
``val_every``, at most 50 times per run): mDSC of single clicks on the validation objects --
``val_seeds`` prompts per object drawn with ``trainer.protocol.sample_points`` (seeded by object
id, identical across epochs and runs), each placed at its pixel centre, refined, decoded as one
click, scored with ``trainer.metrics.dice``; mean over seeds of the per-seed mean over objects
(the §3.3 protocol).  Plain SAM2 on the same prompts is scored once as the baseline.  The
checkpoint with the best validation mDSC is kept (without validation data: the last one).
``cand_dist`` columns: mean Euclidean distance, in normalised image coordinates, of the refined
clicks to their object's nearest candidate.

Precision: on CUDA the shift block and SAM2's prompt encoder/decoder run under bf16 autocast
(``amp``); the losses, validation and candidates are computed in float32.

Caching: SAM2 is frozen, so image embeddings (``trainer.feature_cache``) and candidate sets
(``trainer.candidates``) are computed once per image/object and reused from ``cache_dir``
across epochs and runs.

Determinism: every random draw comes from ``numpy.random.default_rng([seed, ...])`` keyed by
(epoch) for the order and (step, object) for the clicks, the shift block is initialised under
``torch.manual_seed(seed)`` and dropout is 0, so a run is a function of its seed, and a resumed
run continues exactly where it stopped (up to floating-point non-determinism of the device).
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

import contextlib
import csv
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpsam2_backend.engine.features import ImageFeatures
from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig
from rpsam2_backend.engine.predictor import RPSAM2Predictor
from rpsam2_backend.engine.sam2_engine import SAM2Engine
from trainer.candidates import DEFAULT_EPS, CandidateGenerator, GridSpec, nearest_candidate_distance
from trainer.feature_cache import FeatureCache, encoder_identity, image_content_hash
from trainer.losses import CompoundLoss, LossTerms
from trainer.metrics import dice as dice_score
from trainer.protocol import sample_points, stable_hash

log = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"
METRICS_FILE = "metrics.csv"
STEPS_FILE = "steps.csv"
MAX_STEP_VALIDATIONS = 50  # with --steps and no val_every: validate at most this often
CURVE_FILE = "curve.png"
TRAINING_FILE = "training.json"
STEP_FIELDS = ["step", "epoch", "loss", "dice", "distance", "outside", "cand_dist", "lr", "grad_norm"]
METRIC_FIELDS = [
    "epoch", "step", "train_loss", "train_dice", "train_distance", "train_outside", "train_cand_dist",
    "val_mdsc", "val_mdsc_sam2", "val_cand_dist", "best", "seconds",
]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults are the paper's (§3.2) where it gives them."""

    epochs: int = 50
    steps: int | None = None  # total optimiser steps; overrides epochs when set
    batch_size: int = 4  # objects per step
    points_per_object: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.01  # AdamW's default; the paper does not say
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    alpha: float = 1.0
    beta: float = 0.1
    gamma: float = 1.0
    theta: float = 15.0
    eps: float = DEFAULT_EPS
    grid: GridSpec = field(default_factory=GridSpec)
    shift: ShiftBlockConfig = field(default_factory=ShiftBlockConfig)
    multimask: bool = True
    val_seeds: int = 3  # single-click prompts per validation object
    val_every: int | None = None  # steps between validations; default one epoch
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    cache_dir: str | None = None  # disk cache of embeddings and candidates
    feature_memory_mb: int = 2048
    candidate_chunk: int = 64
    resume_from: str | None = None  # a previous run's output directory (or its resume.pt)
    keep_resume_state: bool = True  # False: delete resume.pt at the end of a finished run
    progress: bool = True

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "points_per_object": self.points_per_object}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.val_every is not None and self.val_every < 1:
            raise ValueError(f"val_every must be >= 1, got {self.val_every}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.val_seeds < 0:
            raise ValueError(f"val_seeds must be >= 0, got {self.val_seeds}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if isinstance(known.get("grid"), dict):
            known["grid"] = GridSpec.from_dict(known["grid"])
        if isinstance(known.get("shift"), dict):
            known["shift"] = ShiftBlockConfig.from_dict(known["shift"])
        return cls(**known)


@dataclass
class TrainResult:
    checkpoint_dir: Path
    best_val_mdsc: float | None  # None without validation data
    baseline_val_mdsc: float | None  # plain SAM2 on the same validation prompts
    best_step: int
    best_epoch: int
    steps: int  # optimiser steps done in total (including resumed ones)
    epochs: float
    history: list[dict[str, Any]]  # one entry per validation (the rows of metrics.csv)
    seconds: float
    parameters: int
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["checkpoint_dir"] = str(self.checkpoint_dir)
        return out


# ------------------------------------------------------------------------------------- the data


@dataclass
class TrainObject:
    """One object ready for training: packed mask, candidate set, where its features live."""

    key: str  # "<sample_id>/<object_id>"
    class_name: str
    image_hash: str
    orig_hw: tuple[int, int]
    packed_mask: np.ndarray
    grid: np.ndarray  # all grid points (px)
    candidates_px: np.ndarray  # G (px)
    best_dice: float
    sample: Any  # the dataset Sample (to re-read the image if its features were evicted)

    def mask(self) -> np.ndarray:
        h, w = self.orig_hw
        return np.unpackbits(self.packed_mask, count=h * w).reshape(h, w).astype(bool)

    def candidates_norm(self) -> torch.Tensor:
        h, w = self.orig_hw
        return torch.from_numpy(self.candidates_px / np.array([w, h])).float()


def prepare_objects(
    samples: Sequence[Any],
    features: FeatureCache,
    candidates: CandidateGenerator,
    progress: bool = False,
    what: str = "train",
) -> list[TrainObject]:
    """Encode every image once (disk cache) and compute every object's candidate set (disk cache)."""
    from tqdm.auto import tqdm

    objects: list[TrainObject] = []
    for sample in tqdm(samples, desc=f"prepare {what}", disable=not progress, unit="img"):
        if not sample.objects:
            continue
        image = sample.load_image()
        image_hash = image_content_hash(image)
        feats = features.get(image, image_hash)
        for obj in sample.objects:
            mask = obj.load()
            if mask.shape != image.shape[:2]:
                raise ValueError(
                    f"{sample.sample_id}: mask of object {obj.object_id!r} is {mask.shape}, image is {image.shape[:2]}"
                )
            if not mask.any():
                log.warning("%s: object %r has an empty mask; skipped", sample.sample_id, obj.object_id)
                continue
            cand = candidates(feats, mask, image_hash, str(obj.object_id))
            objects.append(
                TrainObject(
                    key=f"{sample.sample_id}/{obj.object_id}",
                    class_name=obj.class_name,
                    image_hash=image_hash,
                    orig_hw=feats.orig_hw,
                    packed_mask=np.packbits(mask.reshape(-1)),
                    grid=cand.grid,
                    candidates_px=cand.points,
                    best_dice=cand.best_dice,
                    sample=sample,
                )
            )
    return objects


def data_summary(objects: Sequence[TrainObject]) -> dict[str, Any]:
    classes: dict[str, int] = {}
    for o in objects:
        classes[o.class_name] = classes.get(o.class_name, 0) + 1
    return {
        "images": len({o.image_hash for o in objects}),
        "objects": len(objects),
        "classes": dict(sorted(classes.items())),
        "mean_candidates": float(np.mean([len(o.candidates_px) for o in objects])) if objects else 0.0,
        "mean_grid_points": float(np.mean([len(o.grid) for o in objects])) if objects else 0.0,
        "mean_best_candidate_dice": float(np.mean([o.best_dice for o in objects])) if objects else 0.0,
    }


def click_points(mask: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` clicks uniform over the object's area: random mask pixel + uniform offset in it, (n, 2)."""
    rows, cols = np.nonzero(mask)
    idx = rng.choice(rows.size, size=n, replace=rows.size < n)
    return np.stack([cols[idx], rows[idx]], axis=1) + rng.random((n, 2))


def validation_points(objects: Sequence[TrainObject], seeds: int) -> list[np.ndarray]:
    """Per object (seeds, 2) pixel-centre clicks, from ``sample_points`` seeded by (seed, object key)."""
    out = []
    for o in objects:
        mask = o.mask()
        pts = [sample_points(mask, np.random.default_rng([s, stable_hash(o.key)]), 1)[0] for s in range(seeds)]
        out.append(np.asarray(pts, dtype=np.float64).reshape(-1, 2) + 0.5)
    return out


# ---------------------------------------------------------------------------------- the trainer


class ShiftBlockTrainer:
    """The loop of ``train_shift_block``; kept as an object so tests can step it and inspect it."""

    def __init__(
        self,
        engine: SAM2Engine,
        config: TrainConfig,
        train_objects: Sequence[TrainObject],
        val_objects: Sequence[TrainObject],
        features: FeatureCache,
        block: ShiftBlock | None = None,
    ) -> None:
        if not train_objects:
            raise ValueError("no training objects (empty dataset, or only empty masks)")
        self.engine = engine
        self.config = config
        self.device = engine.device
        self.train_objects = list(train_objects)
        self.val_objects = list(val_objects)
        self.features = features
        if block is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                block = ShiftBlock(config.shift)
        self.block = block.to(self.device)
        self.predictor = RPSAM2Predictor(engine)
        self.loss_fn = CompoundLoss(config.alpha, config.beta, config.gamma, config.theta)
        self.optimizer = torch.optim.AdamW(
            self.block.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.steps_per_epoch = math.ceil(len(self.train_objects) / config.batch_size)
        self.total_steps = config.steps or config.epochs * self.steps_per_epoch
        if config.val_every:
            self.val_interval = config.val_every
        elif config.steps is None:
            self.val_interval = self.steps_per_epoch
        else:  # a step budget on a tiny dataset: each epoch would be a handful of steps
            self.val_interval = max(self.steps_per_epoch, math.ceil(self.total_steps / MAX_STEP_VALIDATIONS))
        self.step = 0
        self.pending_steps: list[dict[str, float]] = []  # rows not yet appended to steps.csv
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"val_mdsc": None, "step": 0, "epoch": 0}
        self.baseline_mdsc: float | None = None
        self._val_points = validation_points(self.val_objects, config.val_seeds)
        self._autocast = config.amp and self.device.type == "cuda"

    # --- features ------------------------------------------------------------------------------
    def _features(self, obj: TrainObject) -> ImageFeatures:
        try:
            return self.features.get(None, obj.image_hash)
        except KeyError:  # evicted from memory and no disk cache: encode again
            return self.features.get(obj.sample.load_image(), obj.image_hash)

    def _amp(self) -> contextlib.AbstractContextManager:
        if self._autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- one step ------------------------------------------------------------------------------
    def batch_for_step(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_objects))
        bs = self.config.batch_size
        return [int(i) for i in order[index * bs : (index + 1) * bs]]

    def forward_objects(
        self, objects: Sequence[TrainObject], points: Sequence[np.ndarray]
    ) -> list[tuple[LossTerms, torch.Tensor, int, list[torch.Tensor]]]:
        """Refine, decode and score clicks; one refine + one decoder call per image size.

        Returns per group: loss terms, refined normalised points, number of clicks, their candidate sets."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, o in enumerate(objects):
            groups.setdefault(o.orig_hw, []).append(i)
        out = []
        for hw, members in groups.items():
            counts = [len(points[i]) for i in members]
            feats = [self._features(objects[i]) for i in members]
            if len(members) == 1 or len({objects[i].image_hash for i in members}) == 1:
                batch = feats[0]  # one image: the decoder repeats it itself
            else:
                batch = _stack_features(feats, counts, hw)
            clicks = torch.from_numpy(np.concatenate([points[i] for i in members])).float().to(self.device)
            n = clicks.shape[0]
            with self._amp():
                refined_px = self.predictor.refine(batch, clicks, self.block)
                low_res, iou = self.engine.decode_logits(
                    batch, refined_px[:, None, :], torch.ones(n, 1, dtype=torch.int), self.config.multimask
                )
            rows = torch.arange(n, device=low_res.device)
            chosen = low_res[rows, iou.argmax(dim=1)][:, None].float()
            logits = self.engine.upsample(chosen, hw)[:, 0]
            gt = torch.cat(
                [
                    torch.from_numpy(objects[i].mask()).to(self.device)[None].expand(c, -1, -1)
                    for i, c in zip(members, counts, strict=True)
                ]
            )
            size = torch.tensor([hw[1], hw[0]], dtype=torch.float32, device=self.device)
            refined = refined_px.float() / size
            cands = [
                objects[i].candidates_norm().to(self.device)
                for i, c in zip(members, counts, strict=True)
                for _ in range(c)
            ]
            terms = self.loss_fn(logits, gt, refined, cands)
            out.append((terms, refined, n, cands))
        return out

    def train_step(self, clicks: Sequence[np.ndarray] | None = None) -> dict[str, float]:
        """One optimiser step at ``self.step``; returns its logged values.

        ``clicks``: (n, 2) pixel clicks per object of this step's batch instead of random ones
        (tests overfit a fixed set of clicks with it)."""
        cfg = self.config
        indices = self.batch_for_step(self.step)
        objects = [self.train_objects[i] for i in indices]
        if clicks is None:
            clicks = [
                click_points(o.mask(), np.random.default_rng([cfg.seed, self.step, i]), cfg.points_per_object)
                for o, i in zip(objects, indices, strict=True)
            ]
        elif len(clicks) != len(objects):
            raise ValueError(f"{len(clicks)} click sets for a batch of {len(objects)} objects")
        points = [np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in clicks]
        self.block.train()
        self.optimizer.zero_grad(set_to_none=True)
        total_points = sum(len(p) for p in points)
        sums = {"loss": 0.0, "dice": 0.0, "distance": 0.0, "outside": 0.0, "cand_dist": 0.0}
        for terms, refined, n, cands in self.forward_objects(objects, points):
            weight = n / total_points
            (terms.total * weight).backward()
            for k, v in terms.as_floats().items():
                sums[k] += v * weight
            with torch.no_grad():
                sums["cand_dist"] += float(nearest_candidate_distance(refined, cands).mean()) * weight
        grad_norm = self._clip()
        self.optimizer.step()
        self.step += 1
        row = {"step": self.step, "epoch": self.step / self.steps_per_epoch, **sums,
               "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": grad_norm}
        self.pending_steps.append(row)
        return row

    def _clip(self) -> float:
        params = [p for p in self.block.parameters() if p.grad is not None]
        if not params:
            return 0.0
        if self.config.grad_clip > 0:
            return float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))

    # --- validation ----------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, block: ShiftBlock | None) -> dict[str, float | None]:
        """mDSC over the fixed validation prompts (and mean distance to the nearest candidate)."""
        if not self.val_objects or self.config.val_seeds == 0:
            return {"mdsc": None, "cand_dist": None}
        if block is not None:
            block.eval()
        per_seed = np.zeros((self.config.val_seeds, len(self.val_objects)))
        dists = []
        for j, (o, pts) in enumerate(zip(self.val_objects, self._val_points, strict=True)):
            feats = self._features(o)
            clicks = torch.from_numpy(pts).float().to(self.device)
            refined = self.predictor.refine(feats, clicks, block) if block is not None else clicks
            masks, _ = self.engine.decode_masks(
                feats, refined[:, None, :], torch.ones(len(pts), 1, dtype=torch.int), self.config.multimask
            )
            gt = o.mask()
            per_seed[:, j] = [dice_score(m, gt) for m in masks]
            size = torch.tensor([o.orig_hw[1], o.orig_hw[0]], dtype=torch.float32)
            dists.append(nearest_candidate_distance(refined.cpu().float() / size, [o.candidates_norm()] * len(pts)))
        return {
            "mdsc": float(per_seed.mean(axis=1).mean()),
            "cand_dist": float(torch.cat(dists).mean()),
        }

    # --- resume ----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": 1,
            "step": self.step,
            "block": self.block.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": json.dumps(self.config.to_dict()),
            "history": json.dumps(self.history),
            "best": json.dumps(self.best),
            "baseline_mdsc": json.dumps(self.baseline_mdsc),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        saved = TrainConfig.from_dict(json.loads(state["config"]))
        if saved.shift != self.config.shift:
            raise ValueError(
                f"cannot resume: the checkpoint's shift block {saved.shift} differs from {self.config.shift}"
            )
        self.block.load_state_dict(state["block"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.history = json.loads(state["history"])
        self.best = json.loads(state["best"])
        self.baseline_mdsc = json.loads(state["baseline_mdsc"])


def _stack_features(feats: Sequence[ImageFeatures], counts: Sequence[int], hw: tuple[int, int]) -> ImageFeatures:
    """One row of features per click (image i repeated counts[i] times) for a multi-image decoder call."""

    def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.repeat_interleave(n, 0) for t, n in zip(tensors, counts, strict=True)])

    levels = range(len(feats[0].high_res_feats))
    return ImageFeatures(
        stack([f.image_embed for f in feats]), [stack([f.high_res_feats[k] for f in feats]) for k in levels], hw
    )


# ---------------------------------------------------------------------------------- entry point


def train_shift_block(
    dataset_train: Sequence[Any],
    dataset_val: Sequence[Any] | None,
    engine: SAM2Engine,
    config: TrainConfig | None = None,
    out_dir: str | Path = "shift-checkpoint",
    init_from: str | Path | None = None,
    feature_cache: FeatureCache | None = None,
) -> TrainResult:
    """Train a shift block on ``dataset_train`` (``Sample``s), validate on ``dataset_val``.

    ``init_from``: a shift-block checkpoint directory to start from (fine-tuning the live version);
    its block configuration replaces ``config.shift``.  ``config.resume_from``: continue an
    interrupted run (weights, optimiser, step, history).  ``feature_cache``: share the caller's
    embedding cache (otherwise one is made from ``config.cache_dir``).  Writes the directory
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
    train_objects = prepare_objects(dataset_train, features, candidates, config.progress, "train")
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
    kept = [{**r, "step": int(r["step"])} for r in _read_csv(out_dir / STEPS_FILE) if r["step"] <= trainer.step]
    kept = kept if resume_state else []
    _write_csv(out_dir / STEPS_FILE, STEP_FIELDS, kept)
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
    _write_csv(out_dir / METRICS_FILE, METRIC_FIELDS, trainer.history)
    plot_curves(_read_csv(out_dir / STEPS_FILE), trainer.history, out_dir / CURVE_FILE, trainer.baseline_mdsc)
    training = {"config": config.to_dict(), "result": result.to_dict(), "sam2": sam2_info,
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
                _append_csv(out_dir / STEPS_FILE, STEP_FIELDS, trainer.pending_steps)
                trainer.pending_steps = []
                _atomic_torch_save(trainer.state(), out_dir / RESUME_FILE)
                _write_csv(out_dir / METRICS_FILE, METRIC_FIELDS, trainer.history)
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
    for f in tmp.iterdir():
        os.replace(f, out_dir / f.name)
    tmp.rmdir()


def _read_resume(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / RESUME_FILE
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def _atomic_torch_save(obj: object, path: Path) -> None:
    from trainer.feature_cache import atomic_torch_save

    atomic_torch_save(obj, path)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    os.replace(tmp, path)


def _append_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})


def _read_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a numeric CSV we wrote (steps.csv), as floats; [] when the file does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                for row in csv.DictReader(f)]


def _binned(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of (x, y) in ``bins`` consecutive chunks: a readable curve of 10^5 noisy steps."""
    if len(x) <= bins:
        return x, y
    chunks = np.array_split(np.arange(len(x)), bins)
    return np.array([x[c].mean() for c in chunks]), np.array([np.nanmean(y[c]) for c in chunks])


def plot_curves(
    steps: Sequence[dict[str, float]], history: Sequence[dict[str, Any]], path: Path, baseline: float | None
) -> Path:
    """Loss terms per step (left axis) and validation mDSC per validation (right panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.array([r["step"] for r in steps], dtype=float)
    for key, label in (("loss", "total"), ("dice", "Dice"), ("distance", "distance"), ("outside", "outside")):
        bx, by = _binned(x, np.array([r[key] for r in steps], dtype=float), 2000)
        ax_loss.plot(bx, by, label=label, linewidth=1)
    if len(x):
        ax_loss.set_yscale("symlog", linthresh=1.0)  # the exponential distance term spans decades
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    ax_loss.legend()
    val = [(h["step"], h["val_mdsc"]) for h in history if h.get("val_mdsc") is not None]
    if val:
        ax_val.plot([s for s, _ in val], [v for _, v in val], marker="o", label="RP-SAM2")
        if baseline is not None:
            ax_val.axhline(baseline, color="gray", linestyle="--", label="SAM2")
        ax_val.legend()
    else:
        ax_val.text(0.5, 0.5, "no validation data", ha="center", va="center", transform=ax_val.transAxes)
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("mDSC")
    ax_val.set_title("validation mDSC")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
