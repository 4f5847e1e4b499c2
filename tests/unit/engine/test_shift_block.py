"""The shift block (paper §2.3): bounds, gradients, persistence, one sequence for many points."""

from __future__ import annotations

import pytest
import torch

from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig


def test_shift_block_parameter_counts_are_printed_and_plausible(capsys):
    six = ShiftBlock(ShiftBlockConfig(layers=6)).num_parameters()
    two = ShiftBlock(ShiftBlockConfig(layers=2)).num_parameters()
    print(f"shift block trainable parameters: 6 layers {six / 1e6:.2f} M (paper 12.1 M), "
          f"2 layers {two / 1e6:.2f} M (paper 5.8 M)")
    assert 9e6 < six < 13e6 and 3.5e6 < two < 6e6
    assert "6 layers" in capsys.readouterr().out


def test_shift_block_stays_inside_image_and_gradients_reach_parameters(voc_features):
    torch.manual_seed(1)
    block = ShiftBlock(ShiftBlockConfig(layers=2, max_shift=0.9))
    with torch.no_grad():
        block.phi.weight.normal_(std=5.0)  # push hard towards the borders
    points = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.01, 0.99], [0.5, 0.5]])
    embed = torch.randn(4, 256)
    out = block(points, embed, voc_features.image_embed)
    assert out.shape == (4, 2)
    assert (out >= 0).all() and (out <= 1).all()
    assert (out != points).any()
    # gradients: a default block on interior points (clamped or saturated points have none)
    block = ShiftBlock(ShiftBlockConfig(layers=2))
    out = block(torch.tensor([[0.3, 0.4], [0.6, 0.5]]), embed[:2], voc_features.image_embed)
    out.sum().backward()
    missing = [n for n, p in block.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == [], missing


def test_shift_block_round_trip(tmp_path, voc_features):
    block = ShiftBlock(ShiftBlockConfig(layers=1))
    block.save(tmp_path / "v", extra={"note": "x"})
    again = ShiftBlock.load(tmp_path / "v")
    pts, emb = torch.rand(3, 2), torch.randn(3, 256)
    with torch.no_grad():
        assert torch.equal(block.eval()(pts, emb, voc_features.image_embed), again(pts, emb, voc_features.image_embed))
    with pytest.raises(FileNotFoundError, match="rpsam2-train"):
        ShiftBlock.load(tmp_path)


def test_points_of_one_image_are_refined_independently_as_one_sequence(voc_features):
    """The shared-image fast path (one sequence, diagonal mask) equals refining point by point."""
    torch.manual_seed(3)
    block = ShiftBlock(ShiftBlockConfig(layers=2, max_shift=0.5)).eval()
    with torch.no_grad():
        block.phi.weight.normal_(std=0.5)
        points, embeds = torch.rand(5, 2), torch.randn(5, 256)
        together = block(points, embeds, voc_features.image_embed)
        alone = torch.cat([block(points[i : i + 1], embeds[i : i + 1], voc_features.image_embed) for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(together[0], together[1])
