"""The compound loss (paper §2.4) against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.shift.losses import CompoundLoss, dice_loss, distance_loss, mask_value_at, outside_loss

THETA = 15.0

# A 4x4 mask, deliberately not symmetric so that swapped x/y would read different pixels.
#            col 0  1  2  3
MASK_4x4 = [[0, 0, 0, 0],  # row 0
            [0, 1, 1, 0],  # row 1
            [0, 1, 0, 0],  # row 2
            [1, 1, 1, 0]]  # row 3


def norm(col_px: float, row_px: float, width: int = 4, height: int = 4) -> list[float]:
    """Pixel-centre coordinates -> normalised, the convention the losses document."""
    return [(col_px + 0.5) / width, (row_px + 0.5) / height]


# ----------------------------------------------------------------------------- distance loss


def test_distance_single_candidate_matches_eq3():
    refined = torch.tensor([[0.5, 0.5]])
    candidates = [torch.tensor([[0.6, 0.5]])]
    # |dx| = 0.1 -> exp(15 * 0.1) = exp(1.5); |dy| = 0 -> exp(0) = 1
    expected = 0.5 * (math.exp(1.5) + math.exp(0.0) - 2)
    got = distance_loss(refined, candidates, theta=THETA)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_distance_is_zero_on_a_candidate():
    refined = torch.tensor([[0.3, 0.7]])
    loss = distance_loss(refined, [torch.tensor([[0.9, 0.1], [0.3, 0.7]])])
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_distance_takes_the_closest_candidate():
    refined = torch.tensor([[0.5, 0.5]])
    candidates = [torch.tensor([[0.9, 0.9], [0.52, 0.47], [0.6, 0.5]])]
    # per candidate: (0.9,0.9): 0.5*(e^6 + e^6 - 2) ≈ 402;  (0.6,0.5): 0.5*(e^1.5 + 1 - 2) ≈ 1.74
    # (0.52,0.47): |dx| = 0.02 -> e^0.3, |dy| = 0.03 -> e^0.45: 0.5*(e^0.3 + e^0.45 - 2) ≈ 0.459
    expected = 0.5 * (math.exp(0.3) + math.exp(0.45) - 2)
    assert distance_loss(refined, candidates).item() == pytest.approx(expected, rel=1e-5)


def test_distance_batch_with_different_set_sizes_ignores_padding():
    # Point 0 sits near (0, 0): if padded slots leaked in as (0, 0) candidates, its loss would drop.
    refined = torch.tensor([[0.05, 0.05], [0.5, 0.5], [0.2, 0.8]])
    candidates = [
        torch.tensor([[0.5, 0.5]]),
        torch.tensor([[0.1, 0.1], [0.55, 0.5], [0.9, 0.2]]),
        torch.tensor([[0.2, 0.9], [0.0, 0.0]]),
    ]
    expected = [
        0.5 * (math.exp(15 * 0.45) + math.exp(15 * 0.45) - 2),  # only candidate (0.5, 0.5)
        0.5 * (math.exp(15 * 0.05) + math.exp(0.0) - 2),  # (0.55, 0.5) is closest
        0.5 * (math.exp(0.0) + math.exp(15 * 0.1) - 2),  # (0.2, 0.9) beats (0, 0): e^3 + e^12
    ]
    got = distance_loss(refined, candidates)
    assert got.shape == (3,)
    for g, e in zip(got.tolist(), expected, strict=True):
        assert g == pytest.approx(e, rel=1e-5)


def test_distance_gradient_points_towards_closest_candidate():
    refined = torch.tensor([[0.5, 0.5]], requires_grad=True)
    candidates = [torch.tensor([[0.52, 0.47], [0.9, 0.9]])]
    distance_loss(refined, candidates).sum().backward()
    # d/dx' 0.5*exp(θ|x'-x_g|) = 0.5*θ*exp(θ|x'-x_g|)*sign(x'-x_g)
    # x: x' - x_g = -0.02 -> -0.5*15*e^0.3 ;  y: y' - y_g = +0.03 -> +0.5*15*e^0.45
    expected = [-0.5 * 15 * math.exp(0.3), 0.5 * 15 * math.exp(0.45)]
    assert refined.grad is not None
    assert refined.grad[0].tolist() == pytest.approx(expected, rel=1e-5)
    assert candidates[0].grad is None


def test_distance_rejects_empty_or_mismatched_sets():
    with pytest.raises(ValueError, match="empty"):
        distance_loss(torch.tensor([[0.5, 0.5], [0.1, 0.1]]), [torch.tensor([[0.5, 0.5]]), torch.zeros(0, 2)])
    with pytest.raises(ValueError, match="candidate sets"):
        distance_loss(torch.tensor([[0.5, 0.5], [0.1, 0.1]]), [torch.tensor([[0.5, 0.5]])])
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        distance_loss(torch.tensor([[0.5, 0.5]]), [torch.tensor([0.5, 0.5])])


# ----------------------------------------------------------------------------- outside loss


def test_pixel_centres_read_their_own_pixel():
    mask = torch.tensor(MASK_4x4, dtype=torch.float32)
    points = torch.tensor([norm(col, row) for row in range(4) for col in range(4)])
    values = mask_value_at(points, mask.expand(16, 4, 4))
    assert values.tolist() == pytest.approx(mask.flatten().tolist(), abs=1e-6)


def test_bilinear_value_matches_eq4_by_hand():
    mask = torch.tensor(MASK_4x4, dtype=torch.float32)
    # x' = 1.25, y' = 2.5 in pixel-centre units -> j = 1, i = 2, Δx = 0.25, Δy = 0.5
    # n = (1-Δx)(1-Δy)M[2,1] + Δx(1-Δy)M[2,2] + (1-Δx)Δy M[3,1] + Δx Δy M[3,2]
    #   = 0.75*0.5*1 + 0.25*0.5*0 + 0.75*0.5*1 + 0.25*0.5*1 = 0.375 + 0 + 0.375 + 0.125 = 0.875
    point = torch.tensor([norm(1.25, 2.5)])  # = (1.75/4, 3/4) = (0.4375, 0.75)
    assert point[0].tolist() == pytest.approx([0.4375, 0.75])
    assert mask_value_at(point, mask[None]).item() == pytest.approx(0.875, abs=1e-6)
    assert outside_loss(point, mask[None], mode="always").item() == pytest.approx(-math.log(0.875), rel=1e-5)


def test_bilinear_value_on_soft_mask_by_hand():
    # Distinct values so that any mix-up of rows/columns changes the result.
    mask = torch.tensor([[0.0, 0.1, 0.2, 0.3],
                         [0.4, 0.5, 0.6, 0.7],
                         [0.8, 0.9, 1.0, 0.0],
                         [0.2, 0.4, 0.6, 0.8]])
    # x' = 2.2, y' = 0.6 -> j = 2, i = 0, Δx = 0.2, Δy = 0.6
    # n = 0.8*0.4*M[0,2] + 0.2*0.4*M[0,3] + 0.8*0.6*M[1,2] + 0.2*0.6*M[1,3]
    #   = 0.32*0.2 + 0.08*0.3 + 0.48*0.6 + 0.12*0.7 = 0.064 + 0.024 + 0.288 + 0.084 = 0.46
    point = torch.tensor([norm(2.2, 0.6)])
    assert mask_value_at(point, mask[None]).item() == pytest.approx(0.46, abs=1e-6)


def test_object_touching_the_border_reads_full_value_at_the_image_edge():
    mask = torch.tensor(MASK_4x4, dtype=torch.float32)
    # (0, 1) normalised is the bottom-left corner of the image, half a pixel beyond the centre of
    # (row 3, col 0) == 1: the border pixel extends to the edge (with zero padding it would read 0.25).
    corner = torch.tensor([[0.0, 1.0]])
    assert mask_value_at(corner, mask[None]).item() == pytest.approx(1.0, abs=1e-6)
    # bottom edge between col 0 and col 1 centres: x' = 0.5, y' = 3.5 -> 0.5*M[3,0] + 0.5*M[3,1] = 1
    assert mask_value_at(torch.tensor([[0.25, 1.0]]), mask[None]).item() == pytest.approx(1.0, abs=1e-6)


def test_outside_loss_inside_point_is_zero_and_far_outside_is_capped():
    mask = torch.tensor(MASK_4x4, dtype=torch.float32)
    # between the centres of (row 1, col 1), (1, 2): all neighbours read at Δy=0 are 1
    inside = torch.tensor([norm(1.5, 1.0)])
    assert outside_loss(inside, mask[None]).item() == pytest.approx(0.0, abs=1e-6)
    outside = torch.tensor([norm(3.0, 0.0)])  # pixel (row 0, col 3) and its surroundings are 0
    assert outside_loss(outside, mask[None], eps=1e-6).item() == pytest.approx(-math.log(1e-6), rel=1e-5)


def test_outside_loss_gradient_by_hand():
    mask = torch.tensor(MASK_4x4, dtype=torch.float32)
    refined = torch.tensor([norm(1.25, 2.5)], requires_grad=True)
    outside_loss(refined, mask[None], mode="always").sum().backward()
    # n = 0.875 (see above).  ∂n/∂x' = (1-Δy)(M[2,2]-M[2,1]) + Δy(M[3,2]-M[3,1]) = 0.5*(-1) + 0.5*0 = -0.5
    # ∂n/∂y' = (1-Δx)(M[3,1]-M[2,1]) + Δx(M[3,2]-M[2,2]) = 0.75*0 + 0.25*1 = 0.25
    # x' = u*W - 0.5 -> ∂x'/∂u = 4; L = -log n -> ∂L/∂u = -(1/n)*∂n/∂x'*4
    n = 0.875
    expected = [-(1 / n) * -0.5 * 4, -(1 / n) * 0.25 * 4]
    assert refined.grad is not None
    assert refined.grad[0].tolist() == pytest.approx(expected, rel=1e-4)


def test_outside_loss_penalises_only_points_deemed_outside_by_default():
    """§2.4: "If n̂ < 0.5, the point is deemed outside the object, and we penalize it"."""
    mask = torch.tensor(MASK_4x4, dtype=torch.float32)
    # n̂ = 0.875 (inside, near the edge: see test_bilinear_value_matches_eq4_by_hand) -> 0 by default
    near_edge = torch.tensor([norm(1.25, 2.5)], requires_grad=True)
    loss = outside_loss(near_edge, mask[None])
    assert loss.item() == 0.0
    loss.sum().backward()
    assert near_edge.grad.abs().sum().item() == 0.0  # nothing pushes an inside point
    # x' = 1.75, y' = 2.0: between (row 2, col 1) = 1 and (row 2, col 2) = 0 at Δx = 0.75, Δy = 0:
    # n̂ = 0.25·1 + 0.75·0 = 0.25 < 0.5 -> -log 0.25
    outside = torch.tensor([norm(1.75, 2.0)])
    assert mask_value_at(outside, mask[None]).item() == pytest.approx(0.25, abs=1e-6)
    assert outside_loss(outside, mask[None]).item() == pytest.approx(math.log(4.0), rel=1e-5)
    # exactly 0.5 is not "< 0.5": no penalty; the old form penalised it with log 2
    half = torch.tensor([norm(1.5, 2.0)])
    assert mask_value_at(half, mask[None]).item() == pytest.approx(0.5, abs=1e-6)
    assert outside_loss(half, mask[None]).item() == 0.0
    assert outside_loss(half, mask[None], mode="always").item() == pytest.approx(math.log(2.0), rel=1e-5)
    with pytest.raises(ValueError, match="below_half"):
        outside_loss(half, mask[None], mode="sometimes")


def test_compound_loss_uses_the_outside_mode():
    logits, gt, refined, candidates = _batch()
    default = CompoundLoss()(logits, gt, refined, candidates)
    always = CompoundLoss(outside_mode="always")(logits, gt, refined, candidates)
    assert default.outside.item() == pytest.approx(outside_loss(refined, gt).mean().item(), rel=1e-6)
    assert always.outside.item() == pytest.approx(outside_loss(refined, gt, mode="always").mean().item(), rel=1e-6)
    assert always.outside.item() > default.outside.item()


# ----------------------------------------------------------------------------- dice loss


def test_dice_perfect_inverted_and_neutral_logits():
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 1:5] = 1  # 16 of 64 pixels
    perfect = torch.where(target > 0, 30.0, -30.0)
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    # p ≈ 1 - t: Σp·t ≈ 0, Σp + Σt = 48 + 16 = 64 -> 1 - (0 + 1)/(64 + 1)
    assert dice_loss(-perfect, target).item() == pytest.approx(1 - 1 / 65, abs=1e-6)
    # p = 0.5 everywhere: 1 - (2*0.5*16 + 1) / (0.5*64 + 16 + 1) = 1 - 17/49
    assert dice_loss(torch.zeros(1, 8, 8), target).item() == pytest.approx(1 - 17 / 49, abs=1e-6)


def test_dice_per_sample_and_empty_target():
    target = torch.zeros(2, 4, 4)
    target[0, :2] = 1
    logits = torch.full((2, 4, 4), -30.0)
    logits[0, :2] = 30.0
    loss = dice_loss(logits, target)
    assert loss.shape == (2,)
    # sample 1: empty target predicted empty -> 1 - (0 + 1)/(0 + 0 + 1) = 0 thanks to eps
    assert loss.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="must match"):
        dice_loss(logits, target[:, :2])


# ----------------------------------------------------------------------------- compound


def _batch():
    torch.manual_seed(0)
    gt = torch.zeros(3, 4, 4)
    gt[:] = torch.tensor(MASK_4x4, dtype=torch.float32)
    logits = torch.randn(3, 4, 4, requires_grad=True)
    refined = torch.tensor([norm(1.25, 2.5), norm(0.2, 0.3), norm(2.0, 3.0)], requires_grad=True)
    candidates = [
        torch.tensor([norm(1, 1)]),
        torch.tensor([norm(1, 3), norm(2, 1)]),
        torch.tensor([norm(0, 3)]),
    ]
    return logits, gt, refined, candidates


def test_compound_defaults_are_the_papers():
    loss = CompoundLoss()
    assert (loss.alpha, loss.beta, loss.gamma, loss.theta) == (1.0, 0.1, 1.0, 15.0)


def test_compound_combines_weighted_batch_means_and_backpropagates():
    logits, gt, refined, candidates = _batch()
    terms = CompoundLoss(alpha=2.0, beta=0.5, gamma=3.0)(logits, gt, refined, candidates)
    dice = dice_loss(logits, gt).mean()
    dist = distance_loss(refined, candidates).mean()
    out = outside_loss(refined, gt).mean()
    assert terms.dice.item() == pytest.approx(dice.item(), rel=1e-6)
    assert terms.distance.item() == pytest.approx(dist.item(), rel=1e-6)
    assert terms.outside.item() == pytest.approx(out.item(), rel=1e-6)
    expected_total = 2.0 * dice.item() + 0.5 * dist.item() + 3.0 * out.item()
    assert terms.total.item() == pytest.approx(expected_total, rel=1e-6)
    assert set(terms.as_floats()) == {"loss", "dice", "distance", "outside"}

    terms.total.backward()
    assert refined.grad is not None and torch.all(torch.isfinite(refined.grad))
    assert refined.grad.abs().sum() > 0
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_compound_weights_switch_terms_off():
    logits, gt, refined, candidates = _batch()
    only_dist = CompoundLoss(alpha=0.0, beta=1.0, gamma=0.0)(logits, gt, refined, candidates)
    assert only_dist.total.item() == pytest.approx(distance_loss(refined, candidates).mean().item(), rel=1e-6)
