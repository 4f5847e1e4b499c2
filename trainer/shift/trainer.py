"""The shift-block trainer (paper §3.2): frozen SAM2, trainable shift block, compound loss.

One optimiser step:
  1. take ``batch_size`` objects (default 4) of a seeded per-epoch permutation of all training
     objects (an epoch = every object once);
  2. for each object draw ``points_per_object`` (default 10) clicks: with ``train_clicks="area"``
     (default) uniformly inside its ground truth -- a uniformly chosen mask pixel plus a uniform
     sub-pixel offset, i.e. uniform over the object's area ("the user clicks anywhere on the
     instrument"); with ``"grid"`` (``--paper``) distinct points of the object's grid, the one its
     candidates come from ("we do a grid sampling of points in each object and refine 10 random
     points", ``trainer.prompts.grid_clicks``);
  3. refine every click with the shift block (``RPSAM2Predictor.refine``), decode the refined
     clicks with frozen SAM2 in one decoder call per image size, keep the mask SAM2 itself would
     return for one click (``multimask=True``, best predicted IoU: what the backend serves; the
     gradient flows through the chosen mask's logits into the refined coordinates);
  4. L = α·Dice + β·Dist + γ·Out (``trainer.shift.losses.CompoundLoss``) at the original resolution,
     against the object's candidate set G (``trainer.shift.candidates``), averaged over all clicks;
  5. AdamW step (SAM2's recipe, ``trainer.shift.optim``: weight decay 0.1 except on biases, norms,
     positional embeddings and the shift scale; gradient norm clipped at 0.1; the lr follows a
     per-step cosine from ``lr`` to ``lr·lr_final_ratio``).

With ``augment`` (the paper's setting) steps 2-4 run on augmented copies: every image of the batch goes
through SAM2's augmentations (``trainer.augment``) together with the masks of all its objects in the
batch, as SAM2 augments an image with all its masks (one draw per image, seeded by (seed, step, the
batch index of its first object)); the augmented images of one size are encoded in one encoder call,
each augmented object gets its candidate set on the fly (all its grid points in one batched decode),
and the clicks are drawn inside the augmented mask (or on its grid).  Without it, features and
candidates come from the caches (the fast path).

Validation (after each epoch, or every ``val_every`` steps; with a ``steps`` budget and no
``val_every``, at most 50 times per run): mDSC of single clicks on the validation objects --
``val_seeds`` prompts per object drawn with ``trainer.prompts.sample_points`` (seeded by object
id, identical across epochs and runs), each placed at its pixel centre, refined, decoded as one
click, scored with ``trainer.scores.dice``; mean over seeds of the per-seed mean over objects
(the §3.3 protocol).  Plain SAM2 on the same prompts is scored once as the baseline.  The
checkpoint with the best validation mDSC is kept (without validation data: the last one).
``cand_dist`` columns: mean Euclidean distance, in normalised image coordinates, of the refined
clicks to their object's nearest candidate.

Precision: on CUDA the shift block's transformer layers and SAM2's mask decoder run under bf16 autocast
(``amp``), and so does the encoder of the augmented path; SAM2's point embeddings (``SAM2Engine``) and
the shift block's head (norm, φ, tanh, σ(s) scaling: ``ShiftBlock.head``) stay float32, so a refined
point is not rounded to bf16; the losses, validation and candidates are computed in float32.

Determinism: every random draw comes from ``numpy.random.default_rng([seed, ...])`` keyed by
(epoch) for the order and (step, object) for the clicks, the shift block is initialised under
``torch.manual_seed(seed)`` and dropout is 0, so a run is a function of its seed, and a resumed
run continues exactly where it stopped (up to floating-point non-determinism of the device).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rpsam2_backend.engine.features import ImageFeatures
from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
from rpsam2_backend.engine.predictor import RPSAM2Predictor
from rpsam2_backend.engine.sam2_engine import SAM2Engine
from trainer.augment import augment
from trainer.feature_cache import FeatureCache
from trainer.prompts import click_points, grid_clicks
from trainer.scores import dice as dice_score
from trainer.shift.candidates import CandidateSet, grid_dice, grid_points, nearest_candidate_distance
from trainer.shift.config import TrainConfig
from trainer.shift.losses import CompoundLoss, LossTerms
from trainer.shift.objects import TrainObject, validation_points
from trainer.shift.optim import make_optimizer, scheduled_lr, set_lr

log = logging.getLogger(__name__)

MAX_STEP_VALIDATIONS = 50  # with --steps and no val_every: validate at most this often


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
        self.loss_fn = CompoundLoss(config.alpha, config.beta, config.gamma, config.theta, config.outside_loss)
        self.optimizer = make_optimizer(self.block, config.lr, config.weight_decay)
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
        self,
        objects: Sequence[TrainObject],
        points: Sequence[np.ndarray],
        features: Sequence[ImageFeatures] | None = None,
    ) -> list[tuple[LossTerms, torch.Tensor, int, list[torch.Tensor]]]:
        """Refine, decode and score clicks; one refine + one decoder call per image size.

        ``features``: one (single-image) ``ImageFeatures`` per object instead of the cached ones (the
        augmented path).  Returns per group: loss terms, refined normalised points, number of clicks,
        their candidate sets."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, o in enumerate(objects):
            groups.setdefault(o.orig_hw, []).append(i)
        out = []
        for hw, members in groups.items():
            counts = [len(points[i]) for i in members]
            feats = [features[i] if features is not None else self._features(objects[i]) for i in members]
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

    def draw_clicks(self, obj: TrainObject, index: int) -> np.ndarray:
        """This step's ``points_per_object`` training clicks (px) on ``obj`` (the ``index``-th training
        object), by ``train_clicks``: uniform over its area, or distinct points of its grid."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, self.step, index])
        if cfg.train_clicks == "grid":
            return grid_clicks(obj.grid, rng, cfg.points_per_object)
        return click_points(obj.mask(), rng, cfg.points_per_object)

    def train_step(self, clicks: Sequence[np.ndarray] | None = None) -> dict[str, float]:
        """One optimiser step at ``self.step``; returns its logged values.

        ``clicks``: (n, 2) pixel clicks per object of this step's batch instead of random ones
        (tests overfit a fixed set of clicks with it)."""
        cfg = self.config
        indices = self.batch_for_step(self.step)
        objects = [self.train_objects[i] for i in indices]
        features = None
        if cfg.augment:
            objects, features = self.augmented_batch(objects, indices)
        if clicks is None:
            clicks = [self.draw_clicks(o, i) for o, i in zip(objects, indices, strict=True)]
        elif len(clicks) != len(objects):
            raise ValueError(f"{len(clicks)} click sets for a batch of {len(objects)} objects")
        points = [np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in clicks]
        self.block.train()
        self.optimizer.zero_grad(set_to_none=True)
        lr = scheduled_lr(self.step, self.total_steps, cfg.lr, cfg.lr_schedule, cfg.lr_final_ratio)
        set_lr(self.optimizer, lr)
        total_points = sum(len(p) for p in points)
        sums = {"loss": 0.0, "dice": 0.0, "distance": 0.0, "outside": 0.0, "cand_dist": 0.0}
        for terms, refined, n, cands in self.forward_objects(objects, points, features):
            weight = n / total_points
            (terms.total * weight).backward()
            for k, v in terms.as_floats().items():
                sums[k] += v * weight
            with torch.no_grad():
                sums["cand_dist"] += float(nearest_candidate_distance(refined, cands).mean()) * weight
        grad_norm = self._clip()
        self.optimizer.step()
        self.step += 1
        row = {"step": self.step, "epoch": self.step / self.steps_per_epoch, **sums, "lr": lr, "grad_norm": grad_norm}
        self.pending_steps.append(row)
        return row

    # --- the augmented path ------------------------------------------------------------------
    @torch.no_grad()
    def augmented_batch(
        self, objects: Sequence[TrainObject], indices: Sequence[int]
    ) -> tuple[list[TrainObject], list[ImageFeatures]]:
        """Augmented copies of this step's objects with their features (one per object) and on-the-fly
        candidate sets.

        As in SAM2, an image is augmented together with all its masks: the objects of one image in the
        batch share one parameter draw (seeded by (seed, step, the batch index of its first object)),
        one augmented image and its features.  One encoder call per image size for the whole batch; an
        object's candidates are all its grid points decoded in one batched call (``candidate_chunk``
        prompts per decoder call)."""
        cfg = self.config
        by_image: dict[str, list[int]] = {}  # image hash -> positions in the batch
        for pos, o in enumerate(objects):
            by_image.setdefault(o.image_hash, []).append(pos)
        images, masks, image_of = [], [None] * len(objects), [0] * len(objects)
        for members in by_image.values():
            first = objects[members[0]]
            rng = np.random.default_rng([cfg.seed, self.step, indices[members[0]], 1])
            image, moved = augment(first.sample.load_image(), [objects[p].mask() for p in members], rng)
            for p, mask in zip(members, moved, strict=True):
                masks[p], image_of[p] = mask, len(images)
            images.append(image)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for k, image in enumerate(images):
            by_size.setdefault(image.shape, []).append(k)
        features: list[ImageFeatures | None] = [None] * len(images)
        for members in by_size.values():
            with self._amp():
                encoded = self.engine.encode_batch([images[k] for k in members])
            for row, k in enumerate(members):
                features[k] = ImageFeatures(
                    encoded.image_embed[row : row + 1].float(),
                    [t[row : row + 1].float() for t in encoded.high_res_feats],
                    encoded.orig_hw,
                )
        out, object_features = [], []
        for p, (o, mask) in enumerate(zip(objects, masks, strict=True)):
            feats = features[image_of[p]]
            grid = grid_points(mask, cfg.grid)
            dice = grid_dice(self.engine, feats, grid, mask, cfg.candidate_chunk, cfg.multimask)
            cand = CandidateSet(grid, dice, cfg.eps)
            out.append(TrainObject(
                key=f"{o.key}#aug{self.step}", class_name=o.class_name,
                image_hash=f"augmented:{self.step}:{image_of[p]}", orig_hw=o.orig_hw,
                packed_mask=np.packbits(mask.reshape(-1)), grid=cand.grid, candidates_px=cand.points,
                best_dice=cand.best_dice, sample=o.sample,
            ))
            object_features.append(feats)
        return out, object_features

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
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # a resume.pt of the single-group optimiser before SAM2's recipe
            log.warning("optimiser state not restored (%s): AdamW moments restart from zero", exc)
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

