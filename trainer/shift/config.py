"""What a shift-block training run takes (``TrainConfig``) and returns (``TrainResult``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rpsam2_backend.engine.modeling.shift_block import ShiftBlockConfig
from trainer.shift.candidates import DEFAULT_EPS, GridSpec
from trainer.shift.losses import OUTSIDE_MODES
from trainer.shift.optim import SCHEDULES

# Where the training clicks come from (§3.2, "we do a grid sampling of points in each object and refine
# 10 random points during training"): "area" = anywhere on the object (uniform over its area, sub-pixel);
# "grid" = distinct points of the object's candidate grid (the paper's sentence read literally).
TRAIN_CLICK_MODES = ("area", "grid")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults are the paper's (§3.2) where it gives them, SAM2's training recipe
    where the paper defers to it ("all other hyperparameters ... the same as those used to train SAM2":
    AdamW weight decay 0.1, gradient clip 0.1, cosine lr decay to lr/10, see ``trainer.shift.optim``).

    ``augment`` (SAM2's augmentations, ``trainer.augment``) re-encodes augmented images every step and
    computes their candidates on the fly: the paper's setting, ~3x slower per step on a GPU and far
    slower on a CPU, so off by default (``rpsam2-train --paper`` turns it on)."""

    epochs: int = 50
    steps: int | None = None  # total optimiser steps; overrides epochs when set
    batch_size: int = 4  # objects per step
    points_per_object: int = 10
    train_clicks: str = "area"  # "area": uniform over the object; "grid": its grid points (--paper)
    lr: float = 1e-4
    weight_decay: float = 0.1  # SAM2's; 0 on biases, norms, positional embeddings, the shift scale
    grad_clip: float = 0.1  # max gradient norm (SAM2's); 0 disables
    lr_schedule: str = "cosine"  # SAM2's per-step cosine decay, or "constant"
    lr_final_ratio: float = 0.1  # the cosine ends at lr * this (SAM2: lr / 10)
    outside_loss: str = "below_half"  # the paper's: penalise only points with n̂ < 0.5; "always": every point
    augment: bool = False  # SAM2's image augmentations (re-encode per step); see the class docstring
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
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if not 0.0 <= self.lr_final_ratio <= 1.0:
            raise ValueError(f"lr_final_ratio must be in [0, 1], got {self.lr_final_ratio}")
        if self.train_clicks not in TRAIN_CLICK_MODES:
            raise ValueError(f"train_clicks must be one of {TRAIN_CLICK_MODES}, got {self.train_clicks!r}")
        if self.outside_loss not in OUTSIDE_MODES:
            raise ValueError(f"outside_loss must be one of {OUTSIDE_MODES}, got {self.outside_loss!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0")

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
