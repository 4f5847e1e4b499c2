"""Names every layer agrees on: the version string Label Studio shows, the live pointer, job names."""

from __future__ import annotations

import importlib

import pytest

from rpsam2_backend.core import names


def test_version_string_says_method_size_versions_and_random_weights():
    cfg = "configs/sam2.1/sam2.1_hiera_l.yaml"
    assert names.version_string(cfg, "", "", False) == "sam2/sam2.1_hiera_l"
    assert names.version_string(cfg, "v0003", "v0001", False) == "rpsam2/sam2.1_hiera_l/shift-v0003/decoder-v0001"
    assert names.version_string("configs/sam2.1/sam2.1_hiera_t.yaml", "", "v0002", True) == (
        "sam2/sam2.1_hiera_t/decoder-v0002/RANDOM-WEIGHTS"
    )


def test_live_version_reads_the_pointer_the_checkpoint_store_writes(tmp_path):
    from rpsam2_backend.engine.checkpoint_store import CheckpointStore

    assert names.live_version(tmp_path, "shift") is None
    store = CheckpointStore(tmp_path, "shift")
    (tmp_path / "src").mkdir()
    version = store.add(tmp_path / "src")
    store.promote(version)
    assert names.live_version(tmp_path, "shift") == version == store.live()
    assert names.live_version(tmp_path, "decoder") is None


@pytest.mark.parametrize(
    "dotted", [names.SEGMENT_JOB, names.PREENCODE_JOB, names.RETRAIN_JOB, names.WARM_RUNTIME,
               names.INLINE_HEALTH, names.LOAD_WORKER_RUNTIME, names.WORKER_RUNTIME_STATS],
)
def test_every_job_name_resolves_to_a_function(dotted):
    module, _, attr = dotted.rpartition(".")
    assert callable(getattr(importlib.import_module(module), attr))


def test_propagated_predictions_name_their_source_task():
    from rpsam2_backend.core.names import propagate_job_ids, propagated_from, propagation_version

    version = propagation_version(12, 34, "configs/sam2.1/sam2.1_hiera_l.yaml", False)
    assert version == "propagated from task 12 (annotation 34) by sam2.1_hiera_l"
    assert propagation_version(5, 6, "x/sam2.1_hiera_t.yaml", True).endswith("by sam2.1_hiera_t RANDOM-WEIGHTS")
    assert propagated_from(version) == "12"
    assert propagated_from("rpsam2/sam2.1_hiera_l/shift-v0001") is None and propagated_from(None) is None
    assert propagate_job_ids(3, 7) == ("rpsam2-propagate-3-7", "rpsam2-propagate-3-7-next")
