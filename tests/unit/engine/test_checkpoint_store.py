"""Versioned checkpoints with an atomic live pointer: promote, refuse, roll back."""

from __future__ import annotations

import pytest

from rpsam2_backend.engine.checkpoint_store import CheckpointStore
from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig


def test_checkpoint_store_promote_refuse_rollback(tmp_path):
    src = tmp_path / "ck"
    ShiftBlock(ShiftBlockConfig(layers=1)).save(src)
    store = CheckpointStore(tmp_path / "models", "shift")
    assert store.live() is None
    v1 = store.add(src, {"mdsc": 0.5})
    v2 = store.add(src, {"mdsc": 0.6})
    assert (v1, v2) == ("v0001", "v0002") and store.live() is None
    store.promote(v1, "first")
    store.promote(v2, "better")
    store.refuse("v0002", "not better")
    assert store.live() == "v0002" and store.metadata(v2)["mdsc"] == 0.6
    assert store.rollback() == "v0001"
    assert store.rollback() is None and store.live() is None
    with pytest.raises(ValueError, match="nothing to roll back"):
        store.rollback()
    assert [e["event"] for e in store.history()] == ["promote", "promote", "refuse", "rollback", "rollback"]
    with pytest.raises(FileNotFoundError, match="v0009"):
        store.promote("v0009")
