"""The stateless rule that splits a same-label click context into objects.

Contexts are shaped as Label Studio 1.23's editor sends them (every keypoint of the label on the
image, creation order, the newest last; draft keypoints without ``is_positive``; ids on items),
parsed by ``parse_context``; the masks are discs of radius 10 % around each object's first
positive click, minus discs of 3 % around its negative clicks, so the expected grouping can be
worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rpsam2_backend.labelstudio.objects import ClickObjects, group_clicks, near_mask
from rpsam2_backend.labelstudio.prompts import PercentClick, parse_context


def _kp(x: float, y: float, label: str = "Gauge", positive: bool | None = True, id: str = "") -> dict:
    item = {
        "original_width": 1920, "original_height": 1080, "image_rotation": 0,
        "value": {"x": x, "y": y, "width": 0.39, "labels": [label], "keypointlabels": [label]},
        "id": id or f"k{x:g}-{y:g}", "from_name": "click", "to_name": "image", "type": "keypointlabels",
        "origin": "manual",
    }
    if positive is not None:  # draft keypoints come back without it
        item["is_positive"] = positive
    return item


def _disc_masks(clicks: list[PercentClick], radius: float = 10.0, hole: float = 3.0):
    calls: list[tuple[tuple[int, ...], int]] = []

    def inside(indices: tuple[int, ...], k: int) -> bool:
        calls.append((indices, k))
        first = next(clicks[i] for i in indices if clicks[i].positive)
        point = clicks[k]
        if math.dist((first.x, first.y), (point.x, point.y)) > radius:
            return False
        return all(
            math.dist((clicks[i].x, clicks[i].y), (point.x, point.y)) > hole for i in indices if not clicks[i].positive
        )

    return inside, calls


def _group(*items: dict) -> tuple[ClickObjects, list]:
    request = parse_context({"result": list(items)})
    assert request is not None
    inside, calls = _disc_masks(request.clicks)
    return group_clicks([c.positive for c in request.clicks], inside), calls


def test_one_click_is_one_object_and_decodes_nothing_to_decide() -> None:
    objects, calls = _group(_kp(30, 40))
    assert objects.objects == ((0,),) and objects.newest == (0,)
    assert calls == []


def test_refining_clicks_inside_the_mask_stay_with_the_object() -> None:
    objects, _ = _group(_kp(30, 40), _kp(35, 44), _kp(28, 42, positive=False))
    assert objects.objects == ((0, 1, 2),)
    assert objects.newest == (0, 1, 2)


def test_a_positive_click_outside_every_mask_starts_a_second_object() -> None:
    # Two instruments of one class; the first was accepted with its own check mark, so its
    # clicks ride along with every later click of the same label.
    objects, _ = _group(_kp(20, 30, id="a1"), _kp(22, 33, id="a2"), _kp(70, 60, id="b1"))
    assert objects.objects == ((0, 1), (2,))
    assert objects.newest == (2,)  # answer the second object only: the first was answered before


def test_accepting_one_at_a_time_then_refining_the_first_object_again() -> None:
    objects, _ = _group(_kp(20, 30), _kp(70, 60), _kp(72, 62), _kp(21, 29))
    assert objects.objects == ((0, 3), (1, 2))
    assert objects.owner == (0, 1, 1, 0)
    assert objects.newest == (0, 3)


def test_negative_click_goes_to_the_object_whose_mask_contains_it() -> None:
    # Last click was on object 2, but the negative lies in object 1's mask.
    objects, _ = _group(_kp(20, 30), _kp(70, 60), _kp(25, 33, positive=False))
    assert objects.objects == ((0, 2), (1,))
    assert objects.newest == (0, 2)


def test_negative_click_outside_every_mask_refines_the_previous_clicks_object() -> None:
    objects, _ = _group(_kp(20, 30), _kp(70, 60), _kp(95, 5, positive=False))
    assert objects.objects == ((0,), (1, 2))
    assert objects.newest == (1, 2)


def test_negative_only_context_has_no_object() -> None:
    objects, calls = _group(_kp(20, 30, positive=False), _kp(40, 30, positive=False))
    assert objects.objects == () and objects.newest is None
    assert objects.owner == (None, None)
    assert calls == []


def test_negatives_before_the_first_positive_click_join_the_object_it_starts() -> None:
    objects, _ = _group(_kp(20, 30, positive=False), _kp(50, 50))
    assert objects.objects == ((0, 1),)
    assert objects.owner == (0, 0)


def test_draft_keypoints_without_is_positive_count_as_positive_clicks() -> None:
    objects, _ = _group(_kp(20, 30, positive=None), _kp(22, 31, positive=None), _kp(80, 80))
    assert objects.objects == ((0, 1), (2,))


def test_inside_several_masks_the_previous_clicks_object_wins() -> None:
    # Objects 1 (at 20,30) and 2 (at 34,30) overlap around x=27; the last click was on object 2.
    objects, calls = _group(_kp(20, 30), _kp(34, 30), _kp(27, 30))
    assert objects.owner == (0, 1, 1)
    assert calls[-1] == ((1,), 2)  # asked object 2 first and stopped there


def test_inside_several_masks_otherwise_the_most_recently_touched_object_wins() -> None:
    # Objects at (20,30), (34,30), (60,80): the click at (27,30) lies in the first two masks; the
    # previous click started the third, and object 1 was touched after object 2 (its refinement).
    objects, _ = _group(_kp(20, 30), _kp(34, 30), _kp(21, 31), _kp(60, 80), _kp(27, 30))
    assert objects.owner == (0, 1, 0, 2, 0)


def test_a_hole_cut_by_a_negative_click_lets_a_positive_click_there_start_a_new_object() -> None:
    # (21, 30) lies in object 1's disc but inside the hole its negative click cut.  The rule is pure:
    # with the job's margin (near_mask) such a click is near the hole's rim and refines object 1.
    objects, _ = _group(_kp(20, 30), _kp(21, 30.5, positive=False), _kp(21, 30))
    assert objects.objects == ((0, 1), (2,))


# --- near_mask: "on or near the current mask" in pixels -----------------------------------------


def test_near_mask_measures_from_pixel_centres() -> None:
    mask = np.zeros((40, 60), bool)
    mask[10, 20] = True  # centre (20.5, 10.5)
    assert near_mask(mask, 20.9, 10.2, 0.0)  # on the pixel
    assert not near_mask(mask, 21.0, 10.5, 0.0)  # next pixel, no margin
    assert near_mask(mask, 25.5, 10.5, 5.0)  # exactly 5 px from the centre
    assert not near_mask(mask, 25.5, 10.5, 4.99)
    assert near_mask(mask, 23.5, 14.5, 5.0) and not near_mask(mask, 23.5, 14.6, 5.0)  # 3-4-5, then past it
    assert not near_mask(np.zeros((40, 60), bool), 20.5, 10.5, 100.0)


def test_near_mask_clamps_points_on_the_image_edge() -> None:
    mask = np.zeros((40, 60), bool)
    mask[39, 59] = True
    assert near_mask(mask, 60.0, 40.0, 0.0)  # the far edge belongs to the last pixel
    assert near_mask(mask, 57.5, 39.5, 2.0) and not near_mask(mask, 57.5, 39.5, 1.9)


@pytest.mark.parametrize("radius", [0.0, 1.5, 3.0, 7.2])
def test_near_mask_equals_a_brute_force_distance(radius: float) -> None:
    rng = np.random.default_rng(int(radius * 10))
    mask = rng.random((30, 30)) < 0.02
    rows, cols = np.nonzero(mask)
    for x, y in rng.uniform(0, 30, size=(200, 2)):
        on_pixel = bool(mask[int(y), int(x)])
        close = bool((((cols + 0.5 - x) ** 2 + (rows + 0.5 - y) ** 2) <= radius * radius).any())
        assert near_mask(mask, x, y, radius) == (on_pixel or (radius > 0 and close)), (x, y)
