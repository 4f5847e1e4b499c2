"""Mask -> Label Studio polygons: round trips, holes, parts, speckle, the simplification tolerance."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rpsam2_backend.labelstudio.polygons import (
    MAX_PARTS,
    TOLERANCE_PX,
    mask_to_polygons,
    polygons_to_mask,
)

H, W = 120, 200


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _pixels(polygon: list[list[float]]) -> np.ndarray:
    return np.array(polygon) / 100.0 * [W, H]


SHAPES = {
    "rectangle": lambda: np.pad(np.ones((40, 70), bool), ((30, 50), (60, 70))),
    "disc": lambda: _disc(100, 60, 35),
    "thin diagonal": lambda: cv2.line(np.zeros((H, W), np.uint8), (10, 10), (180, 100), 1, thickness=5) > 0,
    "L shape": lambda: np.pad(np.ones((60, 20), bool), ((20, 40), (30, 150))) | np.pad(np.ones((20, 80), bool),
                                                                                      ((60, 40), (30, 90))),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_round_trip_of_simple_shapes(name: str) -> None:
    mask = SHAPES[name]()
    (polygon,) = mask_to_polygons(mask)
    assert _dice(polygons_to_mask([polygon], H, W), mask) > 0.95
    assert len(polygon) >= 3
    assert polygon[0] != polygon[-1]  # Label Studio closes the ring itself
    assert all(0.0 <= v <= 100.0 for point in polygon for v in point)


def test_a_rectangle_becomes_its_four_corners_at_pixel_centres() -> None:
    mask = np.zeros((H, W), bool)
    mask[30:70, 60:130] = True  # rows 30..69, columns 60..129
    (polygon,) = mask_to_polygons(mask)
    corners = sorted(map(tuple, np.round(_pixels(polygon), 6)))
    assert corners == [(60.5, 30.5), (60.5, 69.5), (129.5, 30.5), (129.5, 69.5)]
    np.testing.assert_array_equal(polygons_to_mask([polygon], H, W), mask)


def test_simplification_keeps_the_outline_within_the_tolerance() -> None:
    mask = _disc(100, 60, 40)
    (polygon,) = mask_to_polygons(mask)
    contour = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0][0][:, 0, :] + 0.5
    ring = _pixels(polygon).astype(np.float32)
    distances = [abs(cv2.pointPolygonTest(ring, (float(x), float(y)), True)) for x, y in contour]
    assert max(distances) <= TOLERANCE_PX + 1e-6
    assert len(polygon) < len(contour) / 4  # and it did simplify


def test_holes_are_filled() -> None:
    ring = _disc(100, 60, 40) & ~_disc(100, 60, 15)
    (polygon,) = mask_to_polygons(ring)
    back = polygons_to_mask([polygon], H, W)
    assert back[60, 100]  # the hole is inside the polygon
    assert _dice(back, _disc(100, 60, 40)) > 0.95


def test_parts_become_separate_polygons_largest_first_and_speckle_is_dropped() -> None:
    big, small = _disc(50, 60, 30), _disc(160, 60, 12)
    speckle = np.zeros((H, W), bool)
    speckle[5, 5] = speckle[110, 190] = True  # single pixels
    speckle[2:5, 100:104] = True  # 12 px: under MIN_PART_PX
    polygons = mask_to_polygons(big | small | speckle)
    assert len(polygons) == 2
    assert _dice(polygons_to_mask(polygons[:1], H, W), big) > 0.95
    assert _dice(polygons_to_mask(polygons[1:], H, W), small) > 0.95


def test_parts_under_five_percent_of_the_largest_are_dropped() -> None:
    big = _disc(60, 60, 45)  # ~6360 px
    crumb = np.zeros((H, W), bool)
    crumb[10:28, 170:186] = True  # 288 px: above MIN_PART_PX, below 5 % of the big part
    assert len(mask_to_polygons(big | crumb)) == 1


def test_an_object_under_min_part_px_still_gets_its_polygon() -> None:
    mask = np.zeros((H, W), bool)
    mask[40:43, 60:64] = True  # 12 px, under MIN_PART_PX: the largest (only) part stays
    mask[90, 150] = True  # a single speckle pixel beside it is still dropped
    (polygon,) = mask_to_polygons(mask)
    xs, ys = _pixels(polygon).T
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == pytest.approx((60.5, 63.5, 40.5, 42.5))


def test_at_most_max_parts() -> None:
    mask = np.zeros((H, W), bool)
    for i in range(MAX_PARTS + 5):
        mask[10 + (i // 8) * 30: 30 + (i // 8) * 30, 5 + (i % 8) * 24: 25 + (i % 8) * 24] = True
    assert len(mask_to_polygons(mask)) == MAX_PARTS


def test_empty_mask_gives_no_polygon_and_bad_shapes_are_refused() -> None:
    assert mask_to_polygons(np.zeros((H, W), bool)) == []
    with pytest.raises(ValueError, match="2-D"):
        mask_to_polygons(np.zeros((H, W, 3), bool))


def test_a_one_pixel_wide_line_gives_the_four_corners_of_its_rectangle() -> None:
    mask = np.zeros((H, W), bool)
    mask[50, 20:120] = True  # 100 px; Douglas-Peucker makes it a two-point segment
    (polygon,) = mask_to_polygons(mask)
    assert len(polygon) == 4
    xs, ys = _pixels(polygon).T
    assert (xs.min(), xs.max()) == pytest.approx((20.5, 119.5))
    assert (ys.min(), ys.max()) == pytest.approx((50.0, 51.0))
