"""SAM2's optimiser recipe (``sam2/configs/sam2.1_training/*.yaml``), which the paper keeps ("all other
hyperparameters ... the same as those used to train SAM2", §3.2): AdamW with weight decay 0.1 except on
some parameters, gradient-norm clipping at 0.1, and a per-step cosine decay of the lr to lr/10 without
warm-up (fvcore's ``CosineParamScheduler``: ``end + ½(start - end)(1 + cos(π·step/total))``).

Parameters without weight decay.  SAM2's yaml exempts ``*bias*`` and the parameters of
``torch.nn.LayerNorm`` modules; the issue that introduced this recipe also exempts positional
embeddings and the shift block's scale parameters (s_x, s_y), which SAM2 has no equivalent of:

- names containing ``bias`` (``linear1.bias``, ``self_attn.in_proj_bias``, ...);
- parameters of normalisation modules (any class whose name ends in ``Norm``/``Norm2d``, so SAM2's
  ``LayerNorm2d`` too, which SAM2's exact-type match would miss);
- positional embeddings: names ending in ``_pos`` or containing ``pos_embed`` (``point_pos``,
  ``image_pos``; SAM2 itself decays its ``pos_embed``);
- the shift scale ``scale_logit``: decay would pull σ(s) towards ½ whatever the data say.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

_NORM_CLASS = re.compile(r"(Norm|Norm1d|Norm2d|Norm3d)$")


def no_decay(name: str, module: nn.Module) -> bool:
    """Whether parameter ``name`` (its full dotted name) owned by ``module`` is exempt from weight decay."""
    leaf = name.rsplit(".", 1)[-1]
    return (
        "bias" in leaf
        or bool(_NORM_CLASS.search(type(module).__name__))
        or leaf.endswith("_pos")
        or "pos_embed" in name
        or leaf == "scale_logit"
    )


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: ``{"params", "weight_decay", "names"}`` with decay and without (rules above).

    Only trainable parameters; the names travel with the groups so tests and logs can see the split."""
    decay: list[tuple[str, nn.Parameter]] = []
    exempt: list[tuple[str, nn.Parameter]] = []
    for module_name, module in model.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            name = f"{module_name}.{leaf}" if module_name else leaf
            (exempt if no_decay(name, module) else decay).append((name, param))
    return [
        {"params": [p for _, p in decay], "weight_decay": weight_decay, "names": [n for n, _ in decay]},
        {"params": [p for _, p in exempt], "weight_decay": 0.0, "names": [n for n, _ in exempt]},
    ]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (PyTorch's betas and eps, as SAM2's yaml) over ``parameter_groups``."""
    groups = [g for g in parameter_groups(model, weight_decay) if g["params"]]
    return torch.optim.AdamW(groups, lr=lr)


SCHEDULES = ("cosine", "constant")


def scheduled_lr(step: int, total_steps: int, lr: float, schedule: str = "cosine", final_ratio: float = 0.1) -> float:
    """The lr of optimiser step ``step`` (0-based) of ``total_steps``: SAM2's cosine from ``lr`` to
    ``lr·final_ratio`` evaluated at ``step / total_steps``, or ``lr`` for "constant"."""
    if schedule not in SCHEDULES:
        raise ValueError(f"lr schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "constant":
        return lr
    where = min(max(step / max(1, total_steps), 0.0), 1.0)
    end = lr * final_ratio
    return end + 0.5 * (lr - end) * (1.0 + math.cos(math.pi * where))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
