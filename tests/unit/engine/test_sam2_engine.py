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


def _fp32_point_embedding(engine, xy_norm: torch.Tensor) -> torch.Tensor:
    """SAM2's positive-point embedding at normalised (x, y), computed by hand in float64."""
    encoder = engine.model.sam_prompt_encoder
    gauss = encoder.pe_layer.positional_encoding_gaussian_matrix.double()
    angles = 2 * torch.pi * ((2 * xy_norm.double() - 1) @ gauss)
    pe = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    return (pe + encoder.point_embeddings[1].weight.double()[0]).float()


def test_a_click_maps_to_its_normalised_position_exactly_once(sam2_engine):
    """SAM2 adds 0.5 to every point; our coordinates are continuous already (a pixel centre is col + 0.5),
    so the encoder must see x/W, not x/W + 0.5/1024."""
    h, w = 375, 500
    clicks = torch.tensor([[[250.5, 180.5]], [[0.5, 374.5]], [[499.5, 0.5]]])
    sparse, _ = sam2_engine.point_embeddings(clicks, torch.ones(3, 1, dtype=torch.int), (h, w))
    expected = _fp32_point_embedding(sam2_engine, clicks[:, 0] / torch.tensor([w, h]))
    assert torch.allclose(sparse[:, 0], expected, atol=2e-5)
    # the old double shift (+0.5 model pixels) is far outside that tolerance
    shifted = _fp32_point_embedding(sam2_engine, (clicks[:, 0] / torch.tensor([w, h])) + 0.5 / 1024)
    assert (sparse[:, 0] - shifted).abs().max() > 1e-3


def test_point_embeddings_stay_float32_under_bf16_autocast(sam2_engine, voc_features):
    """Training runs under bf16 autocast, evaluation in fp32: the point embeddings must not differ."""
    clicks = torch.tensor([[[250.5, 180.5]], [[40.25, 60.75]], [[480.0, 20.0]]])
    labels = torch.ones(3, 1, dtype=torch.int)
    fp32, _ = sam2_engine.point_embeddings(clicks, labels, voc_features.orig_hw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = sam2_engine.point_embeddings(clicks, labels, voc_features.orig_hw)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, fp32)


def test_images_of_one_size_encode_in_one_call(sam2_engine, voc, voc_features):
    before = sam2_engine.encode_count
    flipped = voc["rgb"][:, ::-1].copy()
    both = sam2_engine.encode_batch([voc["rgb"], flipped])
    assert sam2_engine.encode_count - before == 2
    assert both.image_embed.shape[0] == 2 and both.orig_hw == voc_features.orig_hw
    assert torch.allclose(both.image_embed[:1], voc_features.image_embed, atol=1e-4)
    assert not torch.allclose(both.image_embed[1:], voc_features.image_embed, atol=1e-2)
    import pytest

    with pytest.raises(ValueError, match="one size"):
        sam2_engine.encode_batch([voc["rgb"], voc["rgb"][:100]])
