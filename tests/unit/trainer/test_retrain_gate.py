"""The promotion gate: a gain in mDSC and a bounded growth of the std across prompts."""

from __future__ import annotations

from trainer.retrain import gate


def test_gate_needs_a_gain_and_a_bounded_std():
    live = {"mdsc": 0.70, "std": 0.02}
    assert gate(live, {"mdsc": 0.75, "std": 0.02}, 0.0, 0.01)[0]
    ok, reason = gate(live, {"mdsc": 0.70, "std": 0.02}, 0.0, 0.01)
    assert not ok and "did not improve" in reason
    ok, reason = gate(live, {"mdsc": 0.80, "std": 0.05}, 0.0, 0.01)
    assert not ok and "std" in reason


def test_a_decoder_is_gated_on_plain_and_on_shifted_clicks(sam2_engine, eval_data_root, tmp_path):
    from tests.unit.trainer.support_eval import BIAS, inverted_decoder, shift_block
    from trainer.datasets import load_dataset
    from trainer.eval.config import EvalConfig
    from trainer.feature_cache import FeatureCache
    from trainer.retrain import decoder_gate

    val = load_dataset(eval_data_root, "folder", "one")
    decoder_dir = inverted_decoder(sam2_engine, tmp_path / "dec")
    features = FeatureCache(sam2_engine)
    config = EvalConfig(seeds=2, progress=False)
    metrics, ok, reason = decoder_gate(val, sam2_engine, shift_block(BIAS), decoder_dir, config, tmp_path / "ev",
                                       features, min_gain=-1.0, std_tolerance=1.0)
    assert ok and set(metrics) == {"plain", "shifted"}
    assert "plain clicks: improved" in reason and "shifted clicks: improved" in reason
    # shifted clicks land elsewhere than plain ones: the two verdicts rest on different numbers
    assert metrics["plain"]["live"]["per_seed"] != metrics["shifted"]["live"]["per_seed"]
    assert {"mdsc", "std", "std_of_mean"} <= set(metrics["shifted"]["candidate"])
    metrics, ok, reason = decoder_gate(val, sam2_engine, shift_block(BIAS), decoder_dir, config, tmp_path / "ev2",
                                       features, min_gain=1.0, std_tolerance=1.0)
    assert not ok and not metrics["plain"]["passed"] and not metrics["shifted"]["passed"]
    assert reason.count("did not improve by more than 1") == 2


def test_the_gate_reads_the_papers_weighted_std():
    from types import SimpleNamespace

    import numpy as np
    import pytest

    from trainer.eval.protocol import ObjectScore, aggregate
    from trainer.retrain import metric_cell

    # class A (1 object): 0.9 / 0.7 over two seeds (std 0.1); class B (3 objects): 0.2 / 0.4 (std 0.1), in
    # anti-phase with A: the per-seed W. Avg. barely moves although every class fluctuates by ±0.1.
    values = {("A", 0): 0.9, ("A", 1): 0.7, ("B", 0): 0.2, ("B", 1): 0.4}
    scores = [ObjectScore("m", seed, f"{cls}{k}", cls, values[(cls, seed)], 1.0)
              for seed in (0, 1) for cls, n in (("A", 1), ("B", 3)) for k in range(n)]
    cell = metric_cell(SimpleNamespace(tables={"table1": aggregate(scores)}), "m")
    assert cell["mdsc"] == pytest.approx((0.8 + 3 * 0.3) / 4)
    assert cell["std"] == pytest.approx(0.1)  # (1·0.1 + 3·0.1) / 4
    per_seed = [(0.9 + 3 * 0.2) / 4, (0.7 + 3 * 0.4) / 4]
    assert cell["std_of_mean"] == pytest.approx(np.std(per_seed)) and cell["std_of_mean"] < 0.1
