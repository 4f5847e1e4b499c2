"""Prompt points: inside the mask, (x, y) = (col, row), uniform, and fixed by seed and object id."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.prompts import click_points, grid_clicks, points_for_protocol, sample_points, stable_hash


def disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_sampled_points_lie_inside_mask_at_pixel_centers():
    mask = disc(30, 40, 12, 20, 6) & ~disc(30, 40, 12, 20, 3)  # ring: the centroid is outside
    rng = np.random.default_rng(0)
    pts = sample_points(mask, rng, n=25)
    assert pts.shape == (25, 2) and pts.dtype == np.float64
    assert np.array_equal(pts, np.round(pts))
    xs, ys = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert mask[ys, xs].all()
    assert len({tuple(p) for p in pts}) == 25  # distinct


def test_points_are_x_col_y_row():
    mask = np.zeros((10, 20), bool)
    mask[7, 15] = True
    assert sample_points(mask, np.random.default_rng(1)).tolist() == [[15.0, 7.0]]


def test_sampling_is_roughly_uniform():
    mask = np.zeros((5, 5), bool)
    mask[1, 1] = mask[3, 3] = True
    rng = np.random.default_rng(3)
    hits = sum(sample_points(mask, rng)[0, 0] == 1.0 for _ in range(2000))
    assert 850 < hits < 1150


def test_empty_mask_raises():
    with pytest.raises(ValueError):
        sample_points(np.zeros((5, 5), bool), np.random.default_rng(0))


def test_more_points_than_pixels_raises():
    mask = np.zeros((5, 5), bool)
    mask[2, 2] = True
    with pytest.raises(ValueError):
        sample_points(mask, np.random.default_rng(0), n=2)


def _objects():
    return [
        ("img1/0", disc(60, 80, 20, 20, 10)),
        ("img1/1", disc(60, 80, 40, 60, 12)),
        ("img2/0", disc(60, 80, 30, 40, 15)),
    ]


def test_same_seed_same_points_regardless_of_order_and_additions():
    seeds = [0, 1, 2, 3]
    base = points_for_protocol(_objects(), seeds)
    again = points_for_protocol(_objects(), seeds)  # e.g. the second method's evaluation run
    shuffled = points_for_protocol(list(reversed(_objects())), seeds)
    extended = points_for_protocol([("img0/9", disc(60, 80, 30, 30, 20)), *_objects()], seeds)
    for seed in seeds:
        assert set(base[seed]) == {"img1/0", "img1/1", "img2/0"}
        for object_id, pts in base[seed].items():
            assert pts.shape == (1, 2)
            np.testing.assert_array_equal(pts, again[seed][object_id])
            np.testing.assert_array_equal(pts, shuffled[seed][object_id])
            np.testing.assert_array_equal(pts, extended[seed][object_id])


def test_different_seeds_give_different_points():
    pts = points_for_protocol(_objects(), list(range(10)))
    for object_id in ("img1/0", "img1/1", "img2/0"):
        distinct = {tuple(pts[s][object_id][0]) for s in range(10)}
        assert len(distinct) >= 8  # hundreds of pixels per disc: collisions are rare


def test_protocol_points_inside_masks_with_several_points():
    objects = _objects()
    pts = points_for_protocol(objects, [5, 6], n_points=3)
    for seed in (5, 6):
        for object_id, mask in objects:
            p = pts[seed][object_id]
            assert p.shape == (3, 2)
            assert mask[p[:, 1].astype(int), p[:, 0].astype(int)].all()


def test_duplicate_object_ids_rejected():
    with pytest.raises(ValueError):
        points_for_protocol([("a", disc(9, 9, 4, 4, 2)), ("a", disc(9, 9, 4, 4, 3))], [0])


def test_stable_hash_distinguishes_types_and_is_fixed():
    assert stable_hash(1) != stable_hash("1")
    assert stable_hash(("img", 3)) == stable_hash(("img", 3))
    assert 0 <= stable_hash("x") < 2**63


def test_click_points_fall_on_mask_pixels_and_repeat_by_seed():
    mask = disc(30, 40, 12, 20, 4)
    pts = click_points(mask, np.random.default_rng([0, 1]), 50)
    assert pts.shape == (50, 2)
    assert mask[np.floor(pts[:, 1]).astype(int), np.floor(pts[:, 0]).astype(int)].all()
    assert len(np.unique(pts - np.floor(pts))) > 50  # sub-pixel offsets, not pixel corners
    np.testing.assert_array_equal(pts, click_points(mask, np.random.default_rng([0, 1]), 50))
    single = np.zeros((5, 5), bool)
    single[2, 3] = True
    assert np.floor(click_points(single, np.random.default_rng(0), 4)).tolist() == [[3.0, 2.0]] * 4


def test_grid_clicks_are_distinct_grid_points_of_the_object_and_repeat_by_seed():
    from trainer.shift.candidates import GridSpec, grid_points

    mask = disc(60, 80, 30, 40, 20)
    grid = grid_points(mask, GridSpec(target_points=64))
    assert len(grid) > 20
    pts = grid_clicks(grid, np.random.default_rng([0, 5, 1]), 10)
    assert pts.shape == (10, 2)
    on_grid = {tuple(g) for g in grid}
    assert all(tuple(p) in on_grid for p in pts)  # grid points themselves, no sub-pixel jitter
    assert len({tuple(p) for p in pts}) == 10  # distinct
    np.testing.assert_array_equal(pts, grid_clicks(grid, np.random.default_rng([0, 5, 1]), 10))
    assert not np.array_equal(pts, grid_clicks(grid, np.random.default_rng([0, 6, 1]), 10))
    # a grid smaller than n: every point once, the rest drawn again from the grid
    small = grid[:3]
    few = grid_clicks(small, np.random.default_rng(0), 5)
    assert {tuple(p) for p in few} == {tuple(g) for g in small} and len(few) == 5
    with pytest.raises(ValueError, match="empty grid"):
        grid_clicks(np.zeros((0, 2)), np.random.default_rng(0), 1)
