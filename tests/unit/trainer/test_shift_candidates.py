"""Candidate points (§2.2) and their disk cache, on the real VOC photo with random-weight SAM2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rpsam2_backend.engine.embedding_cache import image_key
from trainer.scores import dice
from trainer.shift.candidates import (
    CandidateGenerator,
    CandidateSet,
    GridSpec,
    grid_dice,
    grid_points,
    nearest_candidate_distance,
)

SMALL_GRID = GridSpec(target_points=8)


def _object(voc: dict, rank: int) -> np.ndarray:
    """The rank-th largest VOC instance mask."""
    masks = voc["masks"]
    order = np.argsort([-m.sum() for m in masks])
    return masks[order[rank]].astype(bool)


def _inside(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    cols, rows = np.floor(points[:, 0]).astype(int), np.floor(points[:, 1]).astype(int)
    return mask[rows, cols]


# --- grid -------------------------------------------------------------------------------------


def test_grid_points_lie_inside_every_voc_object_and_hit_the_target(voc):
    for mask in voc["masks"].astype(bool):
        if not mask.any():
            continue
        points = grid_points(mask, GridSpec(target_points=64))
        assert _inside(mask, points).all()
        assert np.allclose(points % 1.0, 0.5)  # pixel centres
        assert len(np.unique(points, axis=0)) == len(points)
        area = int(mask.sum())
        if area >= 64 * 4:  # stride above min_stride: about target_points, whatever the shape
            assert 64 / 3 <= len(points) <= 64 * 3, (area, len(points))


def test_thin_object_gets_stride_reduced_until_min_points():
    mask = np.zeros((200, 200), bool)
    mask[100, 20:180] = True  # one pixel high: a 20-px lattice would mostly miss it
    points = grid_points(mask, GridSpec(target_points=4, min_points=8))
    assert len(points) >= 8
    assert _inside(mask, points).all()
    tiny = np.zeros((10, 10), bool)
    tiny[3, 4] = True
    assert grid_points(tiny).tolist() == [[4.5, 3.5]]
    with pytest.raises(ValueError, match="empty"):
        grid_points(np.zeros((5, 5), bool))


def test_fixed_stride_overrides_target():
    mask = np.ones((100, 100), bool)
    assert len(grid_points(mask, GridSpec(stride=10))) == 100
    assert len(grid_points(mask, GridSpec(stride=25))) == 16


# --- Dice of grid points ---------------------------------------------------------------------


def test_batched_candidate_dice_equals_separate_single_clicks(sam2_engine, voc, voc_feature_cache):
    features = voc_feature_cache.get(voc["rgb"])
    mask = _object(voc, 1)
    points = grid_points(mask, SMALL_GRID)
    assert len(points) >= 4
    batched = grid_dice(sam2_engine, features, points, mask, chunk_size=len(points))
    chunked = grid_dice(sam2_engine, features, points, mask, chunk_size=3)
    single, sizes = [], []
    for x, y in points:
        masks, _ = sam2_engine.decode_masks(
            features, torch.tensor([[[x, y]]], dtype=torch.float32), torch.ones(1, 1, dtype=torch.int)
        )
        single.append(dice(masks[0], mask))
        sizes.append(int(masks[0].sum()))
    single = np.array(single)
    # Batching changes the decoder's float summation order, so a logit within rounding of 0 may
    # flip: allow three flipped pixels, each moving Dice = 2I/(P+G) by at most 2/(P+G).  Another
    # point's mask, or another point order, moves it by orders of magnitude more (std below).
    three_pixels = 3 * 2.0 / (min(sizes) + int(mask.sum()))
    np.testing.assert_allclose(batched, single, rtol=0, atol=three_pixels)
    np.testing.assert_allclose(chunked, single, rtol=0, atol=three_pixels)
    assert single.std() > 100 * three_pixels  # the points get different masks: equality means something


def test_candidate_set_respects_eps_and_lies_inside(sam2_engine, voc, voc_feature_cache):
    features = voc_feature_cache.get(voc["rgb"])
    mask = _object(voc, 0)
    generator = CandidateGenerator(sam2_engine, GridSpec(target_points=16), eps=0.005)
    cand = generator(features, mask)
    assert len(cand.grid) >= 8
    best = cand.dice.max()
    chosen = cand.dice[cand.selected]
    assert (chosen >= best - 0.005).all()
    assert (cand.dice[~cand.selected] < best - 0.005).all()
    assert len(cand.points) >= 1 and len(cand.points) < len(cand.grid)  # random weights still discriminate
    assert _inside(mask, cand.points).all()
    assert cand.grid[np.argmax(cand.dice)].tolist() in cand.points.tolist()
    # eps widens monotonically; eps=0 keeps exactly the maxima; a huge eps keeps everything
    wider = cand.with_eps(0.05)
    assert set(map(tuple, cand.points)) <= set(map(tuple, wider.points))
    assert (cand.with_eps(0.0).dice[cand.with_eps(0.0).selected] == best).all()
    assert len(cand.with_eps(1.0).points) == len(cand.grid)
    h, w = mask.shape
    norm = cand.normalised((h, w))
    assert ((norm > 0) & (norm < 1)).all()
    np.testing.assert_allclose(norm * [w, h], cand.points)


def test_candidate_cache_hits_skip_decoding_and_keys_on_mask_and_grid(sam2_engine, voc, voc_feature_cache, tmp_path):
    features = voc_feature_cache.get(voc["rgb"])
    image_hash = image_key(voc["rgb"])
    mask = _object(voc, 3)
    first = CandidateGenerator(sam2_engine, SMALL_GRID, cache_dir=tmp_path)
    a = first(features, mask, image_hash, "obj-3")
    assert (first.computed, first.cache_hits) == (1, 0)

    again = CandidateGenerator(sam2_engine, SMALL_GRID, eps=0.02, cache_dir=tmp_path)
    b = again(features, mask, image_hash, "obj-3")
    assert (again.computed, again.cache_hits) == (0, 1)
    np.testing.assert_array_equal(a.grid, b.grid)
    np.testing.assert_array_equal(a.dice, b.dice)
    assert b.eps == 0.02  # eps is applied on read, not part of the key

    other_mask = mask.copy()
    other_mask[np.nonzero(mask)[0][0], np.nonzero(mask)[1][0]] = False
    again(features, other_mask, image_hash, "obj-3")
    assert again.computed == 1  # a changed mask is a new entry
    coarser = CandidateGenerator(sam2_engine, GridSpec(target_points=6), cache_dir=tmp_path)
    coarser(features, mask, image_hash, "obj-3")
    assert coarser.computed == 1  # so is another grid


def test_nearest_candidate_distance():
    points = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    sets = [torch.tensor([[3.0, 4.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0]])]
    np.testing.assert_allclose(nearest_candidate_distance(points, sets).numpy(), [1.0, 0.0])


def test_candidate_set_requires_no_decoding_to_change_eps():
    cs = CandidateSet(np.array([[1.5, 1.5], [2.5, 2.5], [3.5, 3.5]]), np.array([0.9, 0.897, 0.5]), eps=0.005)
    assert cs.points.tolist() == [[1.5, 1.5], [2.5, 2.5]]
    assert cs.with_eps(0.001).points.tolist() == [[1.5, 1.5]]
