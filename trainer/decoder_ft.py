"""SAM2-FT: fine-tune SAM2's mask decoder (image encoder and prompt encoder frozen).

Training data: accepted masks plus pseudo-masks (``Sample``s).  One step takes ``batch_size``
objects of a seeded permutation, draws ``points_per_object`` single clicks uniformly inside each
mask, decodes them with the decoder being trained (multimask, SAM's rule: the loss of the best of
the three masks), and minimises BCE + Dice between the 256x256 low-resolution logits and the mask
resized to 256x256 (SAM2's square frame: the resize keeps no aspect ratio, so the two align).

The decoder trained is a copy: the engine's own decoder -- the one serving clicks -- is never
changed.  ``save_decoder`` writes the weights the runtime loads with ``DecoderSwapper``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
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

log = logging.getLogger(__name__)
LOW_RES = 256


@dataclass(frozen=True)
class DecoderFTConfig:
    steps: int = 100
    batch_size: int = 4
    points_per_object: int = 4
    lr: float = 1e-5
    weight_decay: float = 0.01
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Object:
    image_hash: str
    sample: Sample
    mask: np.ndarray  # bool (H, W)
    target: torch.Tensor  # (256, 256) float


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
            if not mask.any():
                continue
            small = cv2.resize(mask.astype(np.float32), (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA)
            objects.append(_Object(image_hash, sample, mask, torch.from_numpy((small > 0.5).astype(np.float32))))
    return objects


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C, 256, 256) logits vs (256, 256) target -> mean over B of the best channel's BCE + Dice."""
    target = target.to(logits.device).expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(2, 3))
    prob = logits.sigmoid()
    inter = (prob * target).sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(2, 3)) + target.sum(dim=(2, 3)) + 1)
    return (bce + dice).min(dim=1).values.mean()


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
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    per_epoch = max(1, int(np.ceil(len(objects) / config.batch_size)))
    for step in range(config.steps):
        epoch, index = divmod(step, per_epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(objects))
        batch = order[index * config.batch_size : (index + 1) * config.batch_size]
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for i in batch:
            obj = objects[int(i)]
            feats = features.get(None, obj.image_hash) if obj.image_hash in features else features.get(
                obj.sample.load_image(), obj.image_hash)
            pts = click_points(obj.mask, np.random.default_rng([config.seed, step, int(i)]), config.points_per_object)
            coords = torch.from_numpy(pts).float()[:, None, :].to(engine.device)
            low_res, _ = decode_with(engine, decoder, feats, coords, multimask=True)
            loss = _loss(low_res.float(), obj.target) / len(batch)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        optimizer.step()
        losses.append(total)
    decoder.eval()
    save_decoder(decoder, out_dir)
    summary = {"objects": len(objects), "images": len({o.image_hash for o in objects}), "steps": config.steps,
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "config": config.to_dict()}
    log.info("SAM2-FT: %d steps on %d objects, loss %.4f -> %.4f", config.steps, len(objects),
             summary["first_loss"] or 0.0, summary["last_loss"] or 0.0)
    return summary
