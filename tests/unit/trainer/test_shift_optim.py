"""SAM2's optimiser recipe: AdamW parameter groups, the per-step cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig
from trainer.shift.optim import make_optimizer, parameter_groups, scheduled_lr


def test_weight_decay_skips_biases_norms_positional_embeddings_and_the_scale():
    block = ShiftBlock(ShiftBlockConfig(layers=2))
    decay, exempt = parameter_groups(block, 0.1)
    assert decay["weight_decay"] == 0.1 and exempt["weight_decay"] == 0.0
    # every decayed parameter is a weight matrix of an attention, FFN or φ
    assert sorted(decay["names"]) == sorted(
        [f"layers.{i}.{n}" for i in range(2) for n in (
            "self_attn.in_proj_weight", "self_attn.out_proj.weight", "multihead_attn.in_proj_weight",
            "multihead_attn.out_proj.weight", "linear1.weight", "linear2.weight")] + ["phi.weight"])
    assert {"point_pos", "image_pos", "scale_logit", "norm.weight", "norm.bias", "phi.bias",
            "layers.0.norm1.weight", "layers.1.norm3.bias", "layers.0.self_attn.in_proj_bias",
            "layers.1.linear2.bias"} <= set(exempt["names"])
    names = decay["names"] + exempt["names"]
    assert len(names) == len(set(names)) == len(list(block.parameters()))
    assert all(p.ndim >= 2 for p in decay["params"])

    opt = make_optimizer(block, 1e-4, 0.1)
    assert isinstance(opt, torch.optim.AdamW)
    assert [(g["weight_decay"], len(g["params"])) for g in opt.param_groups] == [
        (0.1, len(decay["params"])), (0.0, len(exempt["params"]))]
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8


def test_the_exempt_group_really_is_not_decayed():
    block = ShiftBlock(ShiftBlockConfig(layers=1))
    opt = make_optimizer(block, 1e-2, 0.1)
    before = {n: p.detach().clone() for n, p in block.named_parameters()}
    for p in block.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only weight decay can move a parameter
    opt.step()
    after = dict(block.named_parameters())
    # AdamW: p <- p - lr * wd * p when the gradient is zero
    assert torch.allclose(after["phi.weight"], before["phi.weight"] * (1 - 1e-2 * 0.1))
    for name in ("image_pos", "scale_logit", "norm.weight", "phi.bias"):
        assert torch.equal(after[name], before[name]), name


def test_cosine_schedule_values():
    lr, total = 1e-4, 100
    assert scheduled_lr(0, total, lr) == pytest.approx(1e-4)
    assert scheduled_lr(50, total, lr) == pytest.approx(1e-5 + 0.5 * 9e-5)  # halfway: (lr + lr/10) / 2
    assert scheduled_lr(25, total, lr) == pytest.approx(1e-5 + 0.5 * 9e-5 * (1 + math.cos(math.pi / 4)))
    assert scheduled_lr(100, total, lr) == pytest.approx(1e-5)
    assert scheduled_lr(99, total, lr) > 1e-5
    assert scheduled_lr(10, total, lr, "constant") == lr
    assert scheduled_lr(100, total, lr, final_ratio=0.0) == pytest.approx(0.0, abs=1e-20)
    with pytest.raises(ValueError, match="cosine"):
        scheduled_lr(0, total, lr, "linear")
