"""SAM2-FT: SAM2's loss mix computed by hand, full-resolution targets, the IoU head supervised."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rpsam2_backend.engine.decoder_weights import DECODER_WEIGHTS_FILE
from tests.unit.trainer.support_shift import voc_sample
from trainer.decoder_ft import (
    DecoderFTConfig,
    actual_iou,
    dice_loss,
    private_engine,
    sam2_loss,
    sigmoid_focal_loss,
    train_decoder,
)


def test_focal_dice_and_iou_terms_by_hand():
    # one click, one mask of 2x2 pixels: target [[1, 0], [0, 0]], logits 0 everywhere except 2 on pixel 0
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logits = torch.tensor([[[[2.0, 0.0], [0.0, -1.0]]]])
    p = [1 / (1 + math.exp(-2.0)), 0.5, 0.5, 1 / (1 + math.exp(1.0))]
    t = [1, 0, 0, 0]
    # focal per pixel: α_t (1 - p_t)^2 · CE, α_t = 0.25 for t=1, 0.75 for t=0
    focal = np.mean([
        (0.25 if ti else 0.75) * (1 - (pi if ti else 1 - pi)) ** 2 * -math.log(pi if ti else 1 - pi)
        for pi, ti in zip(p, t, strict=True)
    ])
    assert sigmoid_focal_loss(logits, target.expand_as(logits)).item() == pytest.approx(focal, rel=1e-5)
    dice = 1 - (2 * p[0] + 1) / (sum(p) + 1 + 1)
    assert dice_loss(logits, target.expand_as(logits)).item() == pytest.approx(dice, rel=1e-5)
    # binarised: logits > 0 only at pixel 0 -> IoU 1; the predicted IoU 0.25 is off by 0.75
    assert actual_iou(logits, target.expand_as(logits)).item() == 1.0
    parts = sam2_loss(logits, target, torch.tensor([[0.25]]))
    assert parts["iou"].item() == pytest.approx(0.75)
    assert parts["loss"].item() == pytest.approx(20 * focal + dice + 0.75, rel=1e-5)


def test_multimask_picks_the_best_mask_for_focal_and_dice_and_supervises_every_iou():
    target = torch.zeros(4, 4)
    target[:2] = 1
    good = torch.where(target > 0, 8.0, -8.0)
    bad = -good
    logits = torch.stack([bad, good, torch.zeros(4, 4)])[None]  # (1, 3, 4, 4)
    pred = torch.tensor([[0.5, 0.5, 0.5]])
    parts = sam2_loss(logits, target, pred)
    assert parts["dice"].item() == pytest.approx(dice_loss(logits, target.expand_as(logits))[0, 1].item())
    # actual IoUs: bad 0, good 1, zero logits -> nothing > 0 -> 0; L1 vs 0.5 each -> mean 0.5
    assert actual_iou(logits, target.expand_as(logits)).tolist() == [[0.0, 1.0, 0.0]]
    assert parts["iou"].item() == pytest.approx(0.5)


def test_fine_tuning_writes_a_decoder_and_supervises_the_iou_head(sam2_engine, voc, voc_feature_cache, tmp_path,
                                                                 monkeypatch):
    import trainer.decoder_ft as ft

    seen = []

    def spy(logits, target, pred_iou):
        seen.append((tuple(logits.shape), tuple(target.shape), tuple(pred_iou.shape)))
        return sam2_loss(logits, target, pred_iou)

    monkeypatch.setattr(ft, "sam2_loss", spy)
    engine = private_engine(sam2_engine)
    before = {k: v.clone() for k, v in engine.model.sam_mask_decoder.state_dict().items()}
    config = DecoderFTConfig(steps=2, batch_size=1, points_per_object=2, lr=1e-4)
    summary = train_decoder([voc_sample(voc, [3])], engine, voc_feature_cache, config, tmp_path / "dec")
    assert (tmp_path / "dec" / DECODER_WEIGHTS_FILE).is_file()
    assert summary["steps"] == 2 and len(summary["losses"]) == 2
    assert set(summary["last_terms"]) == {"focal", "dice", "iou"}
    assert summary["last_terms"]["iou"] > 0
    h, w = voc["rgb"].shape[:2]  # full-resolution targets: 3 masks per click at the image size
    assert seen == [((2, 3, h, w), (h, w), (2, 3))] * 2
    # the engine's own decoder is untouched; the saved one differs, in the IoU head too
    after = engine.model.sam_mask_decoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "dec" / DECODER_WEIGHTS_FILE))
    iou_keys = [k for k in saved if k.startswith("iou_prediction_head")]
    assert iou_keys and any(not torch.equal(saved[k], before[k]) for k in iou_keys)
