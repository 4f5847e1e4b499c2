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
