"""The methods compared (one column of the tables each) and how each decodes a batch of prompts.

Methods (``MethodSpec``): plain SAM2; RP-SAM2 = the shift block moves the *first* point only (the
paper's Table 2 "shift first"); SAM2-FT = a fine-tuned mask decoder swapped in for that method and
swapped back afterwards.  A spec may combine a shift block and a decoder.  A *baseline* is another
SAM2-architecture model (MedSAM2, SurgSAM2, another SAM2 size: its own encoder and decoder) run on the
same prompts: ``MethodSpec.engine``.

Trainable parameters (the paper's table header): what the method trained on top of, or instead of,
the released SAM2 -- the shift block for RP-SAM2, the mask decoder for SAM2-FT, both when combined,
and the whole model for plain SAM2 and for a baseline (a model trained or fine-tuned as a whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpsam2_backend.engine.decoder_weights import DecoderSwapper
from rpsam2_backend.engine.features import ImageFeatures
from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
from rpsam2_backend.engine.predictor import RPSAM2Predictor
from rpsam2_backend.engine.sam2_engine import SAM2Engine


@dataclass
class MethodSpec:
    """One column of the tables: frozen SAM2, optionally a shift block and/or a fine-tuned decoder."""

    label: str
    shift_block: ShiftBlock | None = None
    decoder_dir: str | Path | None = None
    source: dict[str, Any] = field(default_factory=dict)  # provenance shown in the report
    engine: SAM2Engine | None = None  # a baseline's own SAM2-architecture model; None: the evaluation's SAM2

    def __post_init__(self) -> None:
        if self.engine is not None and (self.shift_block is not None or self.decoder_dir is not None):
            raise ValueError(f"{self.label}: a baseline model takes neither a shift block nor a decoder")

    @classmethod
    def sam2(cls) -> MethodSpec:
        return cls("SAM2")

    @classmethod
    def rpsam2(cls, shift_block: ShiftBlock, checkpoint: str | Path | None = None) -> MethodSpec:
        return cls("RP-SAM2", shift_block=shift_block, source={"shift_checkpoint": str(checkpoint or "in memory")})

    @classmethod
    def sam2ft(cls, decoder_dir: str | Path) -> MethodSpec:
        return cls("SAM2-FT", decoder_dir=decoder_dir, source={"decoder_checkpoint": str(decoder_dir)})

    @classmethod
    def baseline(cls, label: str, engine: SAM2Engine) -> MethodSpec:
        return cls(label, engine=engine, source={"config": engine.config,
                                                 "checkpoint": engine.checkpoint or "RANDOM WEIGHTS"})

    @property
    def shifts(self) -> bool:
        return self.shift_block is not None

    def trainable_parameters(self, engine: SAM2Engine) -> int:
        """See the module docstring; ``engine`` is the evaluation's SAM2 (for methods that use it)."""
        if self.engine is not None:
            return count_parameters(self.engine.model)
        n = 0
        if self.shift_block is not None:
            n += count_parameters(self.shift_block)
        if self.decoder_dir is not None:
            n += count_parameters(engine.model.sam_mask_decoder)
        return n if n else count_parameters(engine.model)

    def describe(self) -> str:
        parts = ["shift first point" if self.shifts else "no shift"]
        parts += [f"{k}={v}" for k, v in self.source.items()]
        return ", ".join(parts)


def count_parameters(module: torch.nn.Module) -> int:
    """All parameters, frozen or not (SAM2's are frozen here but were trained by their authors)."""
    return sum(p.numel() for p in module.parameters())


class DecoderState:
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


class MethodRunner:
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
