"""The process runtime loads a newly promoted shift block before its next job."""

from __future__ import annotations

from rpsam2_backend.engine.checkpoint_store import CheckpointStore
from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig


def test_runtime_picks_up_a_promoted_shift_block(random_settings, sam2_engine, tmp_path):
    from rpsam2_backend.jobs.runtime import Runtime

    rt = Runtime(random_settings, engine=sam2_engine)
    assert rt.predictor.shift_block is None and rt.refresh_versions() is False
    ShiftBlock(ShiftBlockConfig(layers=1)).save(tmp_path / "ck")
    store = CheckpointStore(random_settings.model.model_dir, "shift")
    store.promote(store.add(tmp_path / "ck"))
    assert rt.refresh_versions() is True
    assert rt.predictor.shift_block is not None and "shift-v0001" in rt.predictor.version
    assert rt.refresh_versions() is False
