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
    # README "Method notes": a layer costs 1,578,752 (the paper's (12.1 M - 5.8 M) / 4 ≈ 1.575 M); the
    # layer-independent rest is 1,049,860 (64x64x256 image positions + point position + norm + φ + s),
    # against the paper's ≈ 2.6 M: 10.52 M / 4.21 M here vs 12.1 M / 5.8 M in the paper.
    assert (six - two) // 4 == 1_578_752
    assert six - 6 * 1_578_752 == 1_049_860 == 64 * 64 * 256 + 256 + 512 + 514 + 2
    assert (six, two) == (10_522_372, 4_207_364)
    assert "6 layers" in capsys.readouterr().out


def test_shift_block_stays_inside_image_and_gradients_reach_parameters(voc_features):
    torch.manual_seed(1)
    block = ShiftBlock(ShiftBlockConfig(layers=2, scale_init=0.9, scale_init_mode="sigma"))
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
    block = ShiftBlock(ShiftBlockConfig(layers=2, scale_init=0.5, scale_init_mode="sigma")).eval()
    with torch.no_grad():
        block.phi.weight.normal_(std=0.5)
        points, embeds = torch.rand(5, 2), torch.randn(5, 256)
        together = block(points, embeds, voc_features.image_embed)
        alone = torch.cat([block(points[i : i + 1], embeds[i : i + 1], voc_features.image_embed) for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_scale_starts_at_the_papers_raw_value_by_default():
    """§3.2 "We initialize (s_x, s_y) with 0.1": the raw parameter, so σ(s) = 1/(1+e^-0.1) ≈ 0.525."""
    block = ShiftBlock(ShiftBlockConfig(layers=1))
    assert block.config.scale_init_mode == "raw"
    assert torch.equal(block.scale_logit.detach(), torch.full((2,), 0.1))
    assert torch.sigmoid(block.scale_logit).tolist() == pytest.approx([0.52497919] * 2, abs=1e-7)


def test_scale_can_start_at_sigma_one_tenth_instead():
    block = ShiftBlock(ShiftBlockConfig(layers=1, scale_init=0.1, scale_init_mode="sigma"))
    assert torch.sigmoid(block.scale_logit).tolist() == pytest.approx([0.1, 0.1], abs=1e-7)
    with pytest.raises(ValueError, match="scale_init_mode"):
        ShiftBlockConfig(scale_init_mode="logit")
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        ShiftBlockConfig(scale_init=1.5, scale_init_mode="sigma")


def test_a_checkpoint_written_before_the_option_keeps_its_meaning(tmp_path, voc_features):
    """Old shift_block.json files have ``max_shift`` (σ(s) at initialisation) and no mode."""
    import json

    old = ShiftBlock(ShiftBlockConfig(layers=1, scale_init=0.2, scale_init_mode="sigma"))
    old.save(tmp_path / "old")
    meta_file = tmp_path / "old" / "shift_block.json"
    meta = json.loads(meta_file.read_text())
    config = meta["config"]
    config["max_shift"] = config.pop("scale_init")
    del config["scale_init_mode"]
    meta_file.write_text(json.dumps(meta))

    again = ShiftBlock.load(tmp_path / "old")
    assert again.config == ShiftBlockConfig(layers=1, scale_init=0.2, scale_init_mode="sigma")
    assert torch.sigmoid(ShiftBlock(again.config).scale_logit).tolist() == pytest.approx([0.2, 0.2], abs=1e-7)
    pts, emb = torch.rand(3, 2), torch.randn(3, 256)
    with torch.no_grad():
        assert torch.equal(old.eval()(pts, emb, voc_features.image_embed), again(pts, emb, voc_features.image_embed))


def test_head_runs_in_float32_under_bf16_autocast():
    """Training runs the block under bf16 autocast, evaluation in float32: the head (norm -> φ -> tanh ->
    σ(s) scaling) must give the float32 result in both, or a training shift is rounded by ~1-2 px on a
    1024 frame.  Without layers the forward pass is the head alone, so it must match float32 exactly."""
    torch.manual_seed(0)
    block = ShiftBlock(ShiftBlockConfig(layers=0)).eval()
    with torch.no_grad():
        block.phi.weight.normal_(std=0.05)  # a trained-size φ: shifts of hundreds of pixels
    points, token, image = torch.rand(64, 2), torch.randn(64, 256), torch.randn(1, 256, 64, 64)
    with torch.no_grad():
        fp32 = block(points, token, image)
        head_fp32 = block.head(token.bfloat16().float(), points)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = block(points, token, image)
            head_mixed = block.head(token.bfloat16(), points)  # the layers' bf16 output under autocast
    assert (fp32 - points).abs().max() > 0.05  # the head does move points
    assert mixed.dtype == head_mixed.dtype == torch.float32
    assert torch.equal(mixed, fp32)
    assert torch.equal(head_mixed, head_fp32)
