"""The methods of the evaluation: a zero shift is exactly SAM2, a shift block moves the first point by its
displacement, a SAM2-FT decoder is used and swapped back.  Uses the shared ``eval_run``."""

from __future__ import annotations

import numpy as np
import torch

from tests.unit.trainer.support_eval import H, W, rows_by


def test_zero_shift_block_is_exactly_sam2_and_the_test_says_no_difference(eval_run):
    by_key = rows_by(eval_run["csv"], "table", "seed", "sample_id", "object_id")
    for rows in by_key.values():
        m = {r["method"]: r for r in rows}
        assert m["rpsam2"]["dice"] == m["sam2"]["dice"]
        assert m["rpsam2"]["hd95"] == m["sam2"]["hd95"]
        assert m["rpsam2"]["first_used"] == m["rpsam2"]["points"][0]
    for tests in eval_run["summary"]["paired_tests"].values():
        for t in tests:
            if t["method"] == "rpsam2":
                assert t["p_value"] == 1.0 and t["note"] == "no difference"
                assert t["test"] == "Wilcoxon signed-rank"
    heat = eval_run["result"].heatmaps[0]
    np.testing.assert_array_equal(heat.dice["rpsam2"], heat.dice["sam2"])


def test_shift_block_moves_the_first_point_by_its_displacement(eval_run):
    block = eval_run["moved"]
    with torch.no_grad():
        step = (torch.sigmoid(block.scale_logit) * torch.tanh(block.phi.bias)).double().numpy()
    rows = [r for r in eval_run["csv"] if r["method"] == "moved"]
    for r in rows:
        x, y = r["points"][0]
        expected = np.clip(np.array([x / W, y / H]) + step, 0.0, 1.0) * np.array([W, H])
        np.testing.assert_allclose(r["first_used"], expected, atol=1e-3)
    assert any(not r["first_inside_gt"] for r in rows)  # shifts of 15 px leave the small objects
    outcomes = eval_run["summary"]["outcomes"]["table1"]
    assert outcomes["moved"]["first_outside"] == sum(not r["first_inside_gt"] for r in rows
                                                     if r["table"] == "table1")
    assert outcomes["sam2"]["first_outside"] == 0


def test_sam2ft_decoder_is_used_and_swapped_back(eval_run):
    assert eval_run["decoder_restored"]
    by_key = rows_by(eval_run["csv"], "table", "seed", "sample_id", "object_id")
    assert any({r["method"]: r["dice"] for r in rows}["sam2ft"] != {r["method"]: r["dice"] for r in rows}["sam2"]
               for rows in by_key.values())
