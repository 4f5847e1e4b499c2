"""SAM2-FT: fine-tune SAM2's mask decoder (image encoder and prompt encoder frozen).

Training data: accepted masks plus pseudo-masks (``Sample``s).  One step takes ``batch_size``
objects of a seeded permutation, draws ``points_per_object`` single clicks uniformly inside each
mask and decodes them with the decoder being trained (multimask: three masks and their predicted
IoUs, what the backend decodes for one click).

Loss: SAM2's own (``sam2/training/loss_fns.py``, ``MultiStepMultiMasksAndIous`` with the weights of
its training configs), per click:

    20 · focal(α=0.25, γ=2) + 1 · Dice      of the mask with the lowest 20·focal + Dice, and
    1 · |predicted IoU - actual IoU|         (L1) averaged over all three masks,

where the actual IoU is that of the binarised mask (logits > 0) with the target.  Supervising the
IoU head matters: inference keeps the mask with the best *predicted* IoU.  SAM2's fourth term
(object-score BCE) is left out: every target here is a present object, so it would only teach
"always present".  The masks are compared with the target at the image's full resolution (the
256x256 logits upsampled bilinearly, as the backend does), so thin instrument tips are supervised.

Optimiser: SAM2's recipe as for the shift block (``trainer.shift.optim``): AdamW, weight decay 0.1
except on biases and norms, gradient norm clipped at 0.1, cosine decay of the lr to lr/10.

The decoder trained is a copy: the engine's own decoder -- the one serving clicks -- is never
changed.  ``save_decoder`` writes the weights the runtime loads with ``DecoderSwapper``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rpsam2_backend.engine.decoder_weights import save_decoder
from rpsam2_backend.engine.embedding_cache import image_key
from rpsam2_backend.engine.features import ImageFeatures
from rpsam2_backend.engine.sam2_engine import SAM2Engine
from trainer.datasets.base import Sample
from trainer.feature_cache import FeatureCache
from trainer.prompts import click_points
from trainer.shift.optim import SCHEDULES, make_optimizer, scheduled_lr, set_lr

log = logging.getLogger(__name__)

# SAM2's loss weights (training configs: loss_mask 20, loss_dice 1, loss_iou 1) and focal parameters.
FOCAL_WEIGHT, DICE_WEIGHT, IOU_WEIGHT = 20.0, 1.0, 1.0
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


@dataclass(frozen=True)
class DecoderFTConfig:
    steps: int = 100
    batch_size: int = 4
    points_per_object: int = 4
    lr: float = 1e-5
    weight_decay: float = 0.1  # SAM2's (0 on biases and norms)
    grad_clip: float = 0.1  # SAM2's
    lr_schedule: str = "cosine"  # SAM2's, to lr / 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.points_per_object < 1:
            raise ValueError("steps, batch_size and points_per_object must be >= 1")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Object:
    image_hash: str
    sample: Sample
    mask: np.ndarray  # bool (H, W), the full-resolution target


def private_engine(engine: SAM2Engine) -> SAM2Engine:
    """An engine sharing ``engine``'s frozen weights but holding its OWN copy of the mask decoder.

    Evaluation swaps decoder weights in and out; on a private copy that cannot reach a click being
    served by the same process (inline mode) at the same time.
    """
    model = copy.copy(engine.model)
    model._modules = dict(engine.model._modules)
    model._modules["sam_mask_decoder"] = copy.deepcopy(engine.model.sam_mask_decoder)
    return SAM2Engine(model, engine.config, engine.checkpoint, str(engine.device))


def decode_with(
    engine: SAM2Engine, decoder: torch.nn.Module, features: ImageFeatures, coords_px: torch.Tensor, multimask: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``engine.decode_logits`` with another decoder module; one image, B single positive clicks."""
    labels = torch.ones(coords_px.shape[:2], dtype=torch.int)
    sparse, dense = engine.point_embeddings(coords_px, labels, features.orig_hw)
    low_res, iou, _, _ = decoder(
        image_embeddings=features.image_embed,
        image_pe=engine.dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        repeat_image=coords_px.shape[0] > 1,
        high_res_features=features.high_res_feats,
    )
    return low_res, iou


def _prepare(samples: Sequence[Sample], features: FeatureCache) -> list[_Object]:
    objects = []
    for sample in samples:
        if not sample.objects:
            continue
        image = sample.load_image()
        image_hash = image_key(image)
        features.get(image, image_hash)
        for obj in sample.objects:
            mask = obj.load()
            if mask.any():
                objects.append(_Object(image_hash, sample, mask))
    return objects


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = FOCAL_ALPHA,
                       gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """SAM2's focal loss per mask, mean over pixels: (B, M, H, W) logits, same-shape {0,1} target -> (B, M)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(2).mean(dim=2)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAM2's Dice loss per mask: ``1 - (2Σpt + 1) / (Σp + Σt + 1)``, (B, M, H, W) -> (B, M)."""
    prob = logits.sigmoid().flatten(2)
    tgt = target.flatten(2)
    return 1 - (2 * (prob * tgt).sum(-1) + 1) / (prob.sum(-1) + tgt.sum(-1) + 1)


def actual_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of the binarised masks (logits > 0) with the target, union clamped to >= 1: (B, M)."""
    pred = (logits > 0).flatten(2)
    tgt = (target > 0).flatten(2)
    inter = (pred & tgt).sum(-1).float()
    union = (pred | tgt).sum(-1).float().clamp(min=1.0)
    return inter / union


def sam2_loss(logits: torch.Tensor, target: torch.Tensor, pred_iou: torch.Tensor) -> dict[str, torch.Tensor]:
    """SAM2's multimask loss, averaged over the B clicks; see the module docstring.

    ``logits`` (B, M, H, W) at the target's resolution, ``target`` (H, W) or (B, H, W) in {0, 1},
    ``pred_iou`` (B, M).  Returns the total and the three (unweighted) terms."""
    target = target.to(logits.device, logits.dtype)
    target = (target[None] if target.ndim == 2 else target)[:, None].expand_as(logits)
    focal = sigmoid_focal_loss(logits, target)
    dice = dice_loss(logits, target)
    iou = (pred_iou.float() - actual_iou(logits, target)).abs()
    best = (FOCAL_WEIGHT * focal + DICE_WEIGHT * dice).argmin(dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    focal_b, dice_b, iou_all = focal[rows, best].mean(), dice[rows, best].mean(), iou.mean()
    total = FOCAL_WEIGHT * focal_b + DICE_WEIGHT * dice_b + IOU_WEIGHT * iou_all
    return {"loss": total, "focal": focal_b, "dice": dice_b, "iou": iou_all}


def train_decoder(
    samples: Sequence[Sample],
    engine: SAM2Engine,
    features: FeatureCache,
    config: DecoderFTConfig,
    out_dir: str | Path,
) -> dict:
    """Fine-tune a copy of the engine's current mask decoder; save it to ``out_dir``; return a summary."""
    objects = _prepare(samples, features)
    if not objects:
        raise ValueError("no objects to fine-tune the mask decoder on")
    decoder = copy.deepcopy(engine.model.sam_mask_decoder).to(engine.device).train()
    for p in decoder.parameters():
        p.requires_grad_(True)
    optimizer = make_optimizer(decoder, config.lr, config.weight_decay)
    losses: list[float] = []
    terms: dict[str, float] = {}
    per_epoch = max(1, int(np.ceil(len(objects) / config.batch_size)))
    for step in range(config.steps):
        epoch, index = divmod(step, per_epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(objects))
        batch = order[index * config.batch_size : (index + 1) * config.batch_size]
        optimizer.zero_grad(set_to_none=True)
        set_lr(optimizer, scheduled_lr(step, config.steps, config.lr, config.lr_schedule))
        total = 0.0
        terms = {"focal": 0.0, "dice": 0.0, "iou": 0.0}
        for i in batch:
            obj = objects[int(i)]
            feats = features.get(None, obj.image_hash) if obj.image_hash in features else features.get(
                obj.sample.load_image(), obj.image_hash)
            pts = click_points(obj.mask, np.random.default_rng([config.seed, step, int(i)]), config.points_per_object)
            coords = torch.from_numpy(pts).float()[:, None, :].to(engine.device)
            low_res, iou = decode_with(engine, decoder, feats, coords, multimask=True)
            logits = engine.upsample(low_res.float(), feats.orig_hw)  # full resolution
            parts = sam2_loss(logits, torch.from_numpy(obj.mask), iou)
            (parts["loss"] / len(batch)).backward()
            total += float(parts["loss"].detach()) / len(batch)
            for k in terms:
                terms[k] += float(parts[k].detach()) / len(batch)
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(total)
    decoder.eval()
    save_decoder(decoder, out_dir)
    summary = {"objects": len(objects), "images": len({o.image_hash for o in objects}), "steps": config.steps,
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "last_terms": terms, "losses": losses, "config": config.to_dict()}
    log.info("SAM2-FT: %d steps on %d objects, loss %.4f -> %.4f", config.steps, len(objects),
             summary["first_loss"] or 0.0, summary["last_loss"] or 0.0)
    return summary
