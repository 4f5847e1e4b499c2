"""The RP-SAM2 compound loss (paper §2.4): L_tot = α·L_dice + β·L_dist + γ·L_out.

Coordinate convention (shared with the shift block and the candidate generator): a point is
``(x, y)`` normalised to [0, 1] by the image *edges*, so the centre of pixel (col, row) is
``((col + 0.5) / W, (row + 0.5) / H)``.  θ=15 in the distance loss only makes sense in this frame
(a shift of the whole image width costs exp(15) ≈ 3.3e6, still finite in float32).

Every term is returned per sample (shape (B,)); ``CompoundLoss`` averages over the batch and
keeps the three terms apart so training can log them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CompoundLoss",
    "LossTerms",
    "dice_loss",
    "distance_loss",
    "mask_value_at",
    "outside_loss",
    "OUTSIDE_MODES",
]


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss ``1 - (2·Σ p·t + eps) / (Σ p + Σ t + eps)`` with ``p = sigmoid(logits)``.

    ``logits`` and ``target`` are (B, H, W) (any trailing shape works; everything after the batch
    dimension is summed).  ``target`` holds {0, 1}.

    ``eps`` is additive smoothing in pixels, 1.0 as in SAM2's own training loss
    (``sam2/training/loss_fns.py``): it keeps the loss defined for an empty target (an empty
    prediction of an empty target scores 0, not 0/0) and is negligible for real objects of
    hundreds of pixels.  Returns (B,) losses in [0, 1).
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must match")
    if logits.ndim < 2:
        raise ValueError(f"expected a batch (B, H, W), got shape {tuple(logits.shape)}")
    prob = torch.sigmoid(logits).flatten(1)
    tgt = target.to(prob.dtype).flatten(1)
    numerator = 2.0 * (prob * tgt).sum(dim=1) + eps
    denominator = prob.sum(dim=1) + tgt.sum(dim=1) + eps
    return 1.0 - numerator / denominator


def distance_loss(refined: Tensor, candidates: Sequence[Tensor], theta: float = 15.0) -> Tensor:
    """Eq. 3, minimised over each point's candidates: (B,) losses.

    ``L(P', G_i) = 0.5·[exp(θ·|x' - x_i|) + exp(θ·|y' - y_i|) - 2]``, zero when P' = G_i.

    ``refined`` is (B, 2) normalised (x, y); ``candidates[b]`` is the (K_b, 2) candidate set of the
    object that point b belongs to (sets may differ in size: they are padded and masked, so the
    whole batch is one tensor expression).  Candidates are targets: no gradient flows into them.
    """
    if refined.ndim != 2 or refined.shape[1] != 2:
        raise ValueError(f"refined must be (B, 2), got shape {tuple(refined.shape)}")
    if len(candidates) != refined.shape[0]:
        raise ValueError(f"{refined.shape[0]} refined points but {len(candidates)} candidate sets")
    sets = []
    for b, cand in enumerate(candidates):
        cand = torch.as_tensor(cand)
        if cand.ndim != 2 or cand.shape[1] != 2:
            raise ValueError(f"candidate set {b} must be (K, 2), got shape {tuple(cand.shape)}")
        if cand.shape[0] == 0:
            raise ValueError(f"candidate set {b} is empty: every object needs at least one candidate")
        sets.append(cand.detach().to(device=refined.device, dtype=refined.dtype))
    sizes = torch.tensor([s.shape[0] for s in sets], device=refined.device)
    padded = nn.utils.rnn.pad_sequence(sets, batch_first=True)  # (B, K_max, 2)
    valid = torch.arange(padded.shape[1], device=refined.device)[None, :] < sizes[:, None]
    # Padding slots get the point itself (distance 0): masking an exp() that overflowed would still
    # send 0·inf = NaN back through the gradient.
    padded = torch.where(valid[..., None], padded, refined.detach()[:, None, :])
    per_candidate = 0.5 * (torch.exp(theta * (refined[:, None, :] - padded).abs()).sum(dim=-1) - 2.0)
    per_candidate = per_candidate.masked_fill(~valid, float("inf"))
    return per_candidate.min(dim=1).values


def mask_value_at(points: Tensor, masks: Tensor) -> Tensor:
    """Bilinear mask value n̂ at normalised points (eq. 4): (B,) for points (B, 2), masks (B, H, W).

    With ``align_corners=False`` grid_sample puts grid -1/+1 on the outer pixel *edges*, so grid
    ``2·u - 1`` of a normalised coordinate ``u = (col + 0.5) / W`` lands exactly on pixel centre
    ``col``: eq. 4 with ``x' = u·W - 0.5`` (``y'`` likewise).  ``padding_mode="border"`` extends the
    outermost pixels to the image edge (the last half pixel), so an object touching the border is
    not diluted towards 0 there.  Differentiable w.r.t. ``points`` (zero gradient where all four
    neighbours agree, i.e. deep inside or far outside the object).
    """
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (B, 2), got shape {tuple(points.shape)}")
    if masks.ndim != 3 or masks.shape[0] != points.shape[0]:
        raise ValueError(f"masks must be (B, H, W) with B={points.shape[0]}, got {tuple(masks.shape)}")
    grid = (points * 2.0 - 1.0).view(-1, 1, 1, 2)  # grid_sample also takes (x, y) order
    image = masks[:, None].to(device=points.device, dtype=points.dtype)
    sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.view(-1)


OUTSIDE_MODES = ("below_half", "always")


def outside_loss(refined: Tensor, gt_masks: Tensor, eps: float = 1e-6, mode: str = "below_half") -> Tensor:
    """Eq. 4 + BCE against "inside", per point, (B,).

    ``mode="below_half"`` (default, the paper's §2.4: "If n̂ < 0.5, the point is deemed outside the
    object, and we penalize it"): ``-log(max(n̂, eps))`` where n̂ < 0.5, else 0 -- a point inside the
    object near its edge is left alone.  ``mode="always"``: ``-log(max(n̂, eps))`` for every point
    (pushes inside points near an edge further in).  ``-log(eps)`` ≈ 13.8 (no gradient) deep outside
    the object, where the distance loss has to pull the point back.
    """
    if mode not in OUTSIDE_MODES:
        raise ValueError(f"outside-loss mode must be one of {OUTSIDE_MODES}, got {mode!r}")
    value = mask_value_at(refined, gt_masks)
    loss = -torch.log(value.clamp(min=eps))
    if mode == "below_half":
        loss = torch.where(value < 0.5, loss, torch.zeros_like(loss))
    return loss


@dataclass
class LossTerms:
    """Batch means of the weighted total and of each (unweighted) term; all scalar tensors."""

    total: Tensor
    dice: Tensor
    distance: Tensor
    outside: Tensor

    def as_floats(self) -> dict[str, float]:
        return {
            "loss": float(self.total.detach()),
            "dice": float(self.dice.detach()),
            "distance": float(self.distance.detach()),
            "outside": float(self.outside.detach()),
        }


class CompoundLoss(nn.Module):
    """α·L_dice + β·L_dist + γ·L_out, defaults from the paper (§3.2: 1.0, 0.1, 1.0; θ = 15)."""

    def __init__(
        self, alpha: float = 1.0, beta: float = 0.1, gamma: float = 1.0, theta: float = 15.0,
        outside_mode: str = "below_half",
    ) -> None:
        super().__init__()
        if outside_mode not in OUTSIDE_MODES:
            raise ValueError(f"outside-loss mode must be one of {OUTSIDE_MODES}, got {outside_mode!r}")
        self.alpha, self.beta, self.gamma, self.theta = alpha, beta, gamma, theta
        self.outside_mode = outside_mode

    def forward(
        self,
        mask_logits: Tensor,
        gt_masks: Tensor,
        refined: Tensor,
        candidates: Sequence[Tensor],
    ) -> LossTerms:
        """One row per refined point: its mask logits (B, H, W) decoded from P', the ground truth
        (B, H, W) of its object (same resolution), P' (B, 2) normalised, and the object's
        candidate set (K_b, 2) normalised."""
        dice = dice_loss(mask_logits, gt_masks).mean()
        distance = distance_loss(refined, candidates, theta=self.theta).mean()
        outside = outside_loss(refined, gt_masks, mode=self.outside_mode).mean()
        total = self.alpha * dice + self.beta * distance + self.gamma * outside
        return LossTerms(total=total, dice=dice, distance=distance, outside=outside)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, theta={self.theta}, "
                f"outside_mode={self.outside_mode}")
