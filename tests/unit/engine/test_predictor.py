"""RP-SAM2 inference: only the first positive click moves; a zero shift is exactly the click."""

from __future__ import annotations

import torch

from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig
from rpsam2_backend.engine.predictor import PixelClick, RPSAM2Predictor


def test_shift_moves_the_first_positive_click_only(sam2_engine, voc_features):
    block = ShiftBlock(ShiftBlockConfig(layers=2, scale_init=0.3, scale_init_mode="sigma"))
    with torch.no_grad():
        block.phi.weight.normal_(std=1.0)
    pred = RPSAM2Predictor(sam2_engine, shift_block=block, shift_version="t1")
    clicks = [PixelClick(60, 50, positive=False), PixelClick(250, 180), PixelClick(300, 200)]
    seg = pred.segment(None, clicks, features=voc_features)
    assert seg.refined_point is not None and seg.refined_point != (250.0, 180.0)
    plain = RPSAM2Predictor(sam2_engine)
    seg0 = plain.segment(None, [PixelClick(250, 180)], features=voc_features)
    assert seg0.refined_point is None
    assert plain.version.startswith("sam2/") and pred.version.startswith("rpsam2/") and "shift-t1" in pred.version


def test_zero_shift_returns_the_click_exactly(sam2_engine, voc_features):
    block = ShiftBlock(ShiftBlockConfig(layers=1))
    with torch.no_grad():
        block.phi.weight.zero_()
    pred = RPSAM2Predictor(sam2_engine, shift_block=block)
    points = torch.tensor([[123.456, 78.9], [499.5, 374.5], [0.25, 0.75]])
    with torch.no_grad():
        assert torch.equal(pred.refine(voc_features, points), points)


def test_box_prompt_decodes_like_sam2s_own_predictor(sam2_engine, voc, voc_features):
    """Box corners as points labelled 2 and 3 (before the clicks) is SAM2ImagePredictor's encoding
    (given the coordinates that undo its half-pixel shift: ours are continuous already)."""
    import numpy as np
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    reference = SAM2ImagePredictor(sam2_engine.model)
    reference.set_image(voc["rgb"])
    box = (120.0, 80.0, 360.0, 300.0)
    for clicks in ([], [PixelClick(250, 180), PixelClick(300, 120, positive=False)]):
        ours = RPSAM2Predictor(sam2_engine).segment(None, clicks, features=voc_features, box=box)
        hw = voc_features.orig_hw
        points = sam2_engine.sam2_predictor_coords([[c.x, c.y] for c in clicks], hw) if clicks else None
        labels = np.array([int(c.positive) for c in clicks]) if clicks else None
        corners = sam2_engine.sam2_predictor_coords([box[:2], box[2:]], hw).reshape(-1)
        masks, scores, _ = reference.predict(points, labels, box=corners, multimask_output=False)
        assert (ours.mask != masks[0].astype(bool)).mean() < 1e-3
        assert abs(ours.score - float(scores[0])) < 1e-4
        assert 0 < ours.mask.sum() < ours.mask.size


def test_box_prompt_is_not_shifted_and_needs_no_positive_click(sam2_engine, voc_features):
    block = ShiftBlock(ShiftBlockConfig(layers=1, scale_init=0.3, scale_init_mode="sigma"))
    with torch.no_grad():
        block.phi.weight.normal_(std=1.0)
    shifted = RPSAM2Predictor(sam2_engine, shift_block=block, shift_version="t1")
    plain = RPSAM2Predictor(sam2_engine)
    clicks = [PixelClick(200, 150, positive=False)]
    a = shifted.segment(None, clicks, features=voc_features, box=(100.0, 50.0, 300.0, 250.0))
    b = plain.segment(None, clicks, features=voc_features, box=(100.0, 50.0, 300.0, 250.0))
    assert a.refined_point is None
    assert (a.mask == b.mask).all() and a.score == b.score


def test_box_outside_the_image_is_refused(sam2_engine, voc_features):
    import pytest

    with pytest.raises(ValueError, match="empty or outside the 500x375 image"):
        RPSAM2Predictor(sam2_engine).segment(None, [], features=voc_features, box=(10.0, 10.0, 600.0, 100.0))
    with pytest.raises(ValueError, match="empty"):
        RPSAM2Predictor(sam2_engine).segment(None, [], features=voc_features, box=(10.0, 10.0, 10.0, 100.0))
    with pytest.raises(ValueError, match="at least one click or a box"):
        RPSAM2Predictor(sam2_engine).segment(None, [], features=voc_features)
