"""VideoEngine.propagate: order of frames, confidence, objects that stop, backward, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.engine.video import tracker
from rpsam2_backend.engine.video.tracker import confidence
from tests.support.video_clip import moving_clip


def test_confidence_multiplies_presence_iou_and_a_free_factor_two_of_area_change():
    conf, ratio = confidence(0.0, 0.8, 100, 100)
    assert (conf, ratio) == (pytest.approx(0.5 * 0.8), 1.0)
    conf, ratio = confidence(2.0, 0.9, 150, 100)  # grew by 1.5x: free
    assert conf == pytest.approx(0.9 / (1 + math.exp(-2.0))) and ratio == pytest.approx(100 / 150)
    conf, ratio = confidence(2.0, 0.9, 100, 400)  # shrank 4x: the area term is 2 * 0.25
    assert conf == pytest.approx(0.9 / (1 + math.exp(-2.0)) * 0.5) and ratio == 0.25
    assert confidence(5.0, 0.9, 0, 100) == (0.0, 0.0)  # vanished
    assert confidence(-1024.0, 1.0, 0, 0) == (0.0, 0.0)  # lost, no overflow


def test_forward_then_backward_from_the_seed_nearest_first(video_engine):
    images, masks = moving_clip(4)
    seeds = {"tool": masks[1]["Tool"], "knife": masks[1]["Knife"]}
    both = list(video_engine.propagate(images, 1, seeds, forward=5, backward=5, min_confidence=0.0))
    assert [(f.index, f.distance) for f in both] == [(2, 1), (3, 2), (0, -1)]  # clipped to the clip
    for frame in both:
        assert set(frame.objects) == {"tool", "knife"}
        assert frame.score == min(o.confidence for o in frame.objects.values())
        for track in frame.objects.values():
            assert track.mask.shape == (96, 128) and track.mask.dtype == bool and track.area == track.mask.sum()
            assert not track.stopped
    # area ratio is against the previous frame of the same pass: the seed for the first of each
    first_back = both[2].objects["tool"]
    assert first_back.area_ratio == pytest.approx(min(first_back.area, seeds["tool"].sum())
                                                  / max(first_back.area, seeds["tool"].sum()))
    # backward starts from the seed alone: the same masks whether forward ran first or not
    (back_only,) = video_engine.propagate(images, 1, seeds, forward=0, backward=1, min_confidence=0.0)
    assert back_only.index == 0
    assert np.array_equal(back_only.objects["tool"].mask, both[2].objects["tool"].mask)
    assert back_only.objects["knife"].object_score == both[2].objects["knife"].object_score


def test_an_object_below_the_threshold_stops_after_its_frame_and_says_why(video_engine):
    images, masks = moving_clip(4)
    seed_mask = masks[0]["Tool"]
    frames = list(video_engine.propagate(images, 0, {1: seed_mask}, forward=3, min_confidence=0.3))
    (frame,) = frames  # random weights drift at once: one frame, then the pass ends
    track = frame.objects[1]
    expected, ratio = confidence(track.object_score, track.iou, track.area, int(seed_mask.sum()))
    assert track.confidence == expected and track.area_ratio == ratio and expected < 0.3
    assert track.stopped == f"confidence {expected:.3f} < 0.3"
    assert frame.score == expected


def test_a_lost_object_stops_while_the_others_go_on(video_engine, monkeypatch):
    """sam2's signals are replaced by fixed ones: object 'a' is lost on frame 2 (score < 0)."""
    calls = []

    def fake_track(predictor, state, frame_idx, obj_idxs, reverse):
        calls.append((frame_idx, list(obj_idxs)))
        out = {}
        for obj_idx in obj_idxs:
            lost = obj_idx == 0 and frame_idx == 2
            logits = torch.full((96, 128), -5.0 if lost else 5.0)
            logits[:, 64:] = -5.0
            out[obj_idx] = (logits, -3.0 if lost else 4.0, 0.9)
        return out

    monkeypatch.setattr(tracker, "track_frame", fake_track)
    images, masks = moving_clip(5)
    half = np.zeros((96, 128), bool)
    half[:, :64] = True
    frames = list(video_engine.propagate(images, 0, {"a": half, "b": half}, forward=4, min_confidence=0.5))
    assert calls == [(1, [0, 1]), (2, [0, 1]), (3, [1]), (4, [1])]
    assert frames[1].objects["a"].stopped == "lost: SAM2's object score -3.00 <= 0"
    assert frames[1].objects["a"].confidence == 0.0 and frames[1].score == 0.0
    assert not frames[1].objects["a"].mask.any()
    assert [set(f.objects) for f in frames] == [{"a", "b"}, {"a", "b"}, {"b"}, {"b"}]
    assert frames[0].score == pytest.approx(0.9 / (1 + math.exp(-4.0)))
    # 'b' alone looks fine on frames 3 and 4, but 'a' is missing there: scored like the frame that lost it
    assert frames[2].objects["b"].confidence == pytest.approx(0.9 / (1 + math.exp(-4.0)))
    assert [f.score for f in frames[2:]] == [0.0, 0.0]


def test_frames_after_a_drifting_object_stops_score_no_higher_than_its_last_confidence(video_engine, monkeypatch):
    """'a' drifts on frame 3 (predicted IoU 0.3: below the threshold); 'b' stays sure throughout."""

    def fake_track(predictor, state, frame_idx, obj_idxs, reverse):
        out = {}
        for obj_idx in obj_idxs:
            logits = torch.full((96, 128), 5.0)
            logits[:, 64:] = -5.0
            out[obj_idx] = (logits, 4.0, 0.3 if obj_idx == 0 and frame_idx == 3 else 0.9)
        return out

    monkeypatch.setattr(tracker, "track_frame", fake_track)
    images, _ = moving_clip(6)
    half = np.zeros((96, 128), bool)
    half[:, :64] = True
    frames = list(video_engine.propagate(images, 1, {"a": half, "b": half}, forward=4, backward=1,
                                         min_confidence=0.5))
    assert [(f.index, set(f.objects)) for f in frames] == [
        (2, {"a", "b"}), (3, {"a", "b"}), (4, {"b"}), (5, {"b"}), (0, {"a", "b"})]
    drifted = frames[1].objects["a"].confidence
    sure = 0.9 / (1 + math.exp(-4.0))
    assert frames[1].objects["a"].stopped.startswith("confidence ")
    assert drifted == pytest.approx(0.3 / (1 + math.exp(-4.0)))
    assert all(f.objects["b"].confidence == pytest.approx(sure) for f in frames)
    # frames 4 and 5 miss 'a': scored like the frame where it stopped, not by 'b' alone; the
    # backward pass tracks 'a' again from the seed and is scored by its own objects
    assert [f.score for f in frames] == pytest.approx([sure, drifted, drifted, drifted, sure])


def test_bad_input_is_refused_with_a_message(video_engine):
    images, masks = moving_clip(3)
    with pytest.raises(BadRequest, match=r"mask of object 'x' is 64x96 .* but the seed frame is 128x96"):
        next(video_engine.propagate(images, 0, {"x": np.ones((96, 64), bool)}, forward=1))
    with pytest.raises(BadRequest, match="mask of object 'x' is empty"):
        next(video_engine.propagate(images, 0, {"x": np.zeros((96, 128), bool)}, forward=1))
    with pytest.raises(BadRequest, match="seed frame 3 is outside the 3 given frames"):
        next(video_engine.propagate(images, 3, {"x": masks[0]["Tool"]}, forward=1))
    with pytest.raises(BadRequest, match="no mask to propagate"):
        next(video_engine.propagate(images, 0, {}, forward=1))
    small = [images[0], images[1][:90]]
    with pytest.raises(BadRequest, match="frame 1 is 128x90 but the seed frame is 128x96"):
        list(video_engine.propagate(small, 0, {"x": masks[0]["Tool"]}, forward=1, min_confidence=0.0))
