"""Frozen SAM2 split into encode and batched, differentiable decode."""

from __future__ import annotations

import torch


def test_batched_decode_equals_one_by_one(sam2_engine, voc_features):
    coords = torch.tensor([[[40.0, 60.0]], [[250.0, 190.0]], [[480.0, 20.0]]])
    labels = torch.ones(3, 1, dtype=torch.int)
    masks, scores = sam2_engine.decode_masks(voc_features, coords, labels)
    for i in range(3):
        one, score = sam2_engine.decode_masks(voc_features, coords[i : i + 1], labels[i : i + 1])
        assert (one[0] != masks[i]).mean() < 1e-3
        assert abs(float(score[0]) - float(scores[i])) < 1e-4


def test_decode_is_differentiable_in_the_point(sam2_engine, voc_features):
    coords = torch.tensor([[[200.0, 150.0]]], requires_grad=True)
    low_res, _ = sam2_engine.decode_logits(voc_features, coords, torch.ones(1, 1, dtype=torch.int), multimask=False)
    low_res.mean().backward()
    assert coords.grad is not None and coords.grad.abs().sum() > 0


def test_dense_pe_is_computed_once_and_is_not_an_inference_tensor(sam2_engine, voc_features, monkeypatch):
    encoder = sam2_engine.model.sam_prompt_encoder
    reference = encoder.get_dense_pe()
    calls = []

    def counted():
        calls.append(1)
        return reference.clone()

    monkeypatch.setattr(encoder, "get_dense_pe", counted)
    sam2_engine._dense_pe = None  # as on a fresh engine: the first request comes from decode_masks
    coords = torch.tensor([[[200.0, 150.0]], [[60.0, 300.0]]])
    labels = torch.ones(2, 1, dtype=torch.int)
    sam2_engine.decode_masks(voc_features, coords, labels)  # runs under torch.inference_mode
    sam2_engine.decode_masks(voc_features, coords[:1], labels[:1])
    pe = sam2_engine.dense_pe()
    assert calls == [1]
    assert sam2_engine.dense_pe() is pe
    assert torch.equal(pe, reference)
    assert not pe.is_inference() and not pe.requires_grad

    # ... so a training step can still differentiate through the decoder afterwards.
    point = torch.tensor([[[200.0, 150.0]]], requires_grad=True)
    low_res, _ = sam2_engine.decode_logits(voc_features, point, torch.ones(1, 1, dtype=torch.int), multimask=False)
    low_res.mean().backward()
    assert point.grad is not None
    assert torch.isfinite(point.grad).all() and point.grad.abs().sum() > 0
    assert calls == [1]
