import math

import numpy as np
import pytest

from trainer.scores import EMPTY_HD95_POLICY, dice, hd95

H, W = 40, 50


def brute_surface(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour outside the mask or outside the image, by explicit loops."""
    out = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    for r in range(h):
        for c in range(w):
            if not mask[r, c]:
                continue
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                rr, cc = r + dr, c + dc
                if not (0 <= rr < h and 0 <= cc < w) or not mask[rr, cc]:
                    out[r, c] = True
                    break
    return out


def brute_hd95(pred: np.ndarray, gt: np.ndarray, spacing=(1.0, 1.0)) -> float:
    """Pooled (MedPy) HD95 from all pairwise distances between the two surface point sets."""
    scale = np.asarray(spacing, dtype=np.float64)
    ps = np.argwhere(brute_surface(pred)) * scale
    gs = np.argwhere(brute_surface(gt)) * scale
    d = np.sqrt(((ps[:, None, :] - gs[None, :, :]) ** 2).sum(-1))
    pooled = np.concatenate([d.min(axis=1), d.min(axis=0)])
    return float(np.percentile(pooled, 95))


def random_shape(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    kind = rng.integers(3)
    if kind == 0:  # ellipse, possibly cut by the image border
        cy, cx = rng.uniform(-5, H + 5), rng.uniform(-5, W + 5)
        ry, rx = rng.uniform(2, 18), rng.uniform(2, 22)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    elif kind == 1:  # rectangle
        r0, c0 = rng.integers(0, H - 2), rng.integers(0, W - 2)
        mask = np.zeros((H, W), bool)
        mask[r0 : r0 + rng.integers(1, 25), c0 : c0 + rng.integers(1, 30)] = True
    else:  # blob: union of a few random discs, may be disconnected
        mask = np.zeros((H, W), bool)
        for _ in range(rng.integers(1, 5)):
            cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(1.5, 9)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if not mask.any():
        mask[rng.integers(H), rng.integers(W)] = True
    return mask


@pytest.mark.parametrize("seed", range(20))
def test_hd95_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    pred, gt = random_shape(rng), random_shape(rng)
    assert hd95(pred, gt) == pytest.approx(brute_hd95(pred, gt), abs=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_hd95_matches_brute_force_on_overlapping_masks(seed):
    # pred = a perturbed copy of gt (small shift plus a random extra shape): the realistic case
    rng = np.random.default_rng(50 + seed)
    gt = random_shape(rng)
    pred = np.roll(gt, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
    pred = pred | (random_shape(rng) & (rng.random((H, W)) < 0.9))
    rows, cols = np.nonzero(gt)
    pred[rows[0], cols[0]] = True  # guarantee overlap even for tiny shapes rolled off themselves
    assert hd95(pred, gt) == pytest.approx(brute_hd95(pred, gt), abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_hd95_anisotropic_spacing_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    pred, gt = random_shape(rng), random_shape(rng)
    expected = brute_hd95(pred, gt, spacing=(0.5, 2.0))
    assert hd95(pred, gt, spacing=(0.5, 2.0)) == pytest.approx(expected, abs=1e-6)


def test_hd95_is_symmetric():
    rng = np.random.default_rng(7)
    pred, gt = random_shape(rng), random_shape(rng)
    assert hd95(pred, gt) == pytest.approx(hd95(gt, pred), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_identical_masks_have_zero_hd95(seed):
    mask = random_shape(np.random.default_rng(seed))
    assert hd95(mask, mask.copy()) == 0.0


@pytest.mark.parametrize("shift", [1, 2, 3, 5])
def test_shifted_square_hd95_equals_shift(shift):
    gt = np.zeros((H, W), bool)
    gt[10:30, 10:30] = True
    pred = np.roll(gt, shift, axis=1)
    assert hd95(pred, gt) == pytest.approx(float(shift), abs=1e-9)


def test_both_empty_gives_zero():
    empty = np.zeros((H, W), bool)
    assert hd95(empty, empty) == 0.0


def test_one_empty_gives_image_diagonal_by_default():
    empty = np.zeros((H, W), bool)
    gt = np.zeros((H, W), bool)
    gt[5:9, 5:9] = True
    assert hd95(empty, gt) == pytest.approx(math.hypot(H, W))
    assert hd95(gt, empty) == pytest.approx(math.hypot(H, W))
    assert hd95(empty, gt, spacing=(2.0, 0.5)) == pytest.approx(math.hypot(2 * H, 0.5 * W))


def test_one_empty_uses_explicit_empty_value():
    empty = np.zeros((H, W), bool)
    gt = np.zeros((H, W), bool)
    gt[0, 0] = True
    assert hd95(empty, gt, empty_value=373.0) == 373.0
    assert hd95(empty, empty, empty_value=373.0) == 0.0


def test_empty_penalty_exceeds_any_real_distance():
    # opposite single-pixel corners: the largest distance two non-empty masks can have
    a = np.zeros((H, W), bool)
    b = np.zeros((H, W), bool)
    a[0, 0] = True
    b[H - 1, W - 1] = True
    assert hd95(a, b) < hd95(a, np.zeros_like(a))


def test_policy_string_mentions_both_cases():
    assert "diagonal" in EMPTY_HD95_POLICY and "0.0" in EMPTY_HD95_POLICY


def test_dice_hand_cases():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :] = True  # 4 pixels
    b[0, :2] = True  # 2 pixels, both inside a
    assert dice(a, b) == pytest.approx(2 * 2 / (4 + 2))
    assert dice(a, a) == 1.0
    c = np.zeros((4, 4), bool)
    c[3, 3] = True
    assert dice(a, c) == 0.0
    empty = np.zeros((4, 4), bool)
    assert dice(empty, empty) == 1.0
    assert dice(a, empty) == 0.0


def test_dice_accepts_non_bool_masks():
    a = np.array([[0, 255], [255, 255]], dtype=np.uint8)
    b = np.array([[0, 1], [0, 0]], dtype=np.int64)
    assert dice(a, b) == pytest.approx(2 * 1 / (3 + 1))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError):
        hd95(np.ones((3, 3)), np.ones((4, 3)))
