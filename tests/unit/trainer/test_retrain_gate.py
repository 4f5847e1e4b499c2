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
