"""``train_shift_block`` with random-weight SAM2 hiera_t on the real VOC photo: the checkpoint directory,
loading it in the backend, and resume.

CPU budget: every run uses a 2-layer block, 1-2 objects and 2-3 clicks per object per step; the
VOC image is encoded once per session (``voc_feature_cache``).
"""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
from rpsam2_backend.engine.predictor import PixelClick, RPSAM2Predictor
from tests.unit.trainer.support_shift import TWO_LAYERS, train_config, voc_sample
from trainer.shift.config import TrainConfig
from trainer.shift.loop import train_shift_block


@pytest.fixture(scope="module")
def trained_run(sam2_engine, voc, voc_feature_cache, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    config = train_config(tmp)
    train = [voc_sample(voc, [0, 1], "voc-train")]
    val = [voc_sample(voc, [2], "voc-val")]
    result = train_shift_block(train, val, sam2_engine, config, tmp / "out", feature_cache=voc_feature_cache)
    return {"result": result, "config": config, "train": train, "val": val, "tmp": tmp}


def test_checkpoint_directory_format(trained_run):
    result, config = trained_run["result"], trained_run["config"]
    out = result.checkpoint_dir
    for name in ("shift_block.safetensors", "shift_block.json", "metrics.csv", "steps.csv", "curve.png",
                 "training.json", "resume.pt"):
        assert (out / name).is_file(), name
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imread(str(out / "curve.png")) is not None

    meta = ShiftBlock.read_meta(out)
    assert meta["config"]["layers"] == 2
    assert meta["train_config"]["lr"] == config.lr and meta["train_config"]["points_per_object"] == 2
    assert meta["metrics"]["val_mdsc"] == result.best_val_mdsc
    assert meta["data"]["train"]["objects"] == 2 and meta["data"]["val"]["objects"] == 1
    assert meta["sam2"]["random_weights"] is True
    assert TrainConfig.from_dict(meta["train_config"]) == config

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4]  # val_every=2, 4 steps
    assert all(0.0 <= float(r["val_mdsc"]) <= 1.0 for r in rows)
    assert float(rows[0]["val_mdsc_sam2"]) == pytest.approx(result.baseline_val_mdsc)
    with open(out / "steps.csv") as f:
        steps = list(csv.DictReader(f))
    assert [int(r["step"]) for r in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) for r in steps)

    best_row = max(rows, key=lambda r: float(r["val_mdsc"]))
    assert result.best_step == int(best_row["step"])
    assert result.best_val_mdsc == pytest.approx(float(best_row["val_mdsc"]))
    training = json.loads((out / "training.json").read_text())
    assert training["result"]["steps"] == 4 and training["cache"]["encoded"] == 0  # features came from cache


def test_checkpoint_loads_in_the_backend_and_moves_the_click(trained_run, sam2_engine, voc, voc_feature_cache,
                                                             random_settings):
    from rpsam2_backend.jobs.runtime import Runtime

    out = trained_run["result"].checkpoint_dir
    features = voc_feature_cache.get(voc["rgb"])
    mask = trained_run["train"][0].objects[0].load()
    rows, cols = np.nonzero(mask)
    click = PixelClick(float(cols[len(cols) // 2]) + 0.5, float(rows[len(rows) // 2]) + 0.5)

    # The step-0 block (same seed, same config): what the checkpoint would be without training.
    torch.manual_seed(trained_run["config"].seed)
    untrained = ShiftBlock(TWO_LAYERS)
    before = RPSAM2Predictor(sam2_engine, untrained, shift_version="init").segment(None, [click], features=features)

    runtime = Runtime(random_settings.with_("model", shift_checkpoint=str(out)), engine=sam2_engine)
    assert runtime.predictor.shift_block is not None
    assert f"shift-{out.name}" in runtime.predictor.version
    served = runtime.predictor.segment(None, [click], features=features)
    assert served.refined_point is not None
    moved = np.hypot(served.refined_point[0] - click.x, served.refined_point[1] - click.y)
    assert moved > 0.5  # pixels
    assert np.hypot(served.refined_point[0] - before.refined_point[0],
                    served.refined_point[1] - before.refined_point[1]) > 1e-3
    # Same weights through ShiftBlock.load directly.
    direct = RPSAM2Predictor(sam2_engine, ShiftBlock.load(out), shift_version="x").segment(
        None, [click], features=features
    )
    assert direct.refined_point == pytest.approx(served.refined_point)
    plain = RPSAM2Predictor(sam2_engine).segment(None, [click], features=features)
    assert plain.refined_point is None


def test_resume_continues_exactly(trained_run, sam2_engine, voc_feature_cache, monkeypatch):
    """A 4-step run interrupted after its step-2 validation point, then resumed, ends where the
    uninterrupted run ended (the cosine lr schedule included: it depends on the planned total)."""
    from trainer.shift.trainer import ShiftBlockTrainer

    tmp = trained_run["tmp"]
    original = ShiftBlockTrainer.train_step

    def interrupted(self, clicks=None):
        if self.step == 2:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, clicks)

    monkeypatch.setattr(ShiftBlockTrainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_shift_block(trained_run["train"], trained_run["val"], sam2_engine, train_config(tmp, steps=4),
                          tmp / "resumed", feature_cache=voc_feature_cache)
    monkeypatch.setattr(ShiftBlockTrainer, "train_step", original)
    assert torch.load(tmp / "resumed" / "resume.pt", weights_only=True)["step"] == 2
    rest = train_config(tmp, steps=4, resume_from=str(tmp / "resumed"))
    second = train_shift_block(trained_run["train"], trained_run["val"], sam2_engine, rest, tmp / "resumed",
                               feature_cache=voc_feature_cache)
    assert second.steps == 4
    straight = torch.load(trained_run["result"].checkpoint_dir / "resume.pt", weights_only=True)
    resumed = torch.load(tmp / "resumed" / "resume.pt", weights_only=True)
    for name, value in straight["block"].items():
        torch.testing.assert_close(resumed["block"][name], value, rtol=1e-5, atol=1e-6)
    with open(tmp / "resumed" / "steps.csv") as f:
        resumed_steps = [float(r["loss"]) for r in csv.DictReader(f)]
    with open(trained_run["result"].checkpoint_dir / "steps.csv") as f:
        straight_steps = [float(r["loss"]) for r in csv.DictReader(f)]
    np.testing.assert_allclose(resumed_steps, straight_steps, rtol=1e-5)
    assert [h["step"] for h in second.history] == [2, 4]

    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_shift_block(trained_run["train"], trained_run["val"], sam2_engine,
                          train_config(tmp, resume_from=str(tmp / "never-ran")), tmp / "bad")
