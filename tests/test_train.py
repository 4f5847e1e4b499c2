"""Shift-block training (§3.2) with random-weight SAM2 hiera_t on the real VOC photo: learning, the
checkpoint format, loading by the backend, resume, and the rpsam2-train CLI.

CPU budget: every run uses a 2-layer block, 1-2 objects and 2-3 clicks per object per step; the
VOC image is encoded once per session (``voc_feature_cache``)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig
from rpsam2_backend.engine.predictor import PixelClick, RPSAM2Predictor
from trainer.candidates import CandidateGenerator, GridSpec, nearest_candidate_distance
from trainer.datasets.base import ObjectMask, Sample
from trainer.train import (
    ShiftBlockTrainer,
    TrainConfig,
    click_points,
    prepare_objects,
    train_shift_block,
)

TWO_LAYERS = ShiftBlockConfig(layers=2)
SMALL_GRID = GridSpec(target_points=12)


def _voc_sample(voc: dict, ranks: list[int], name: str = "voc") -> Sample:
    masks = voc["masks"].astype(bool)
    order = np.argsort([-m.sum() for m in masks])
    objects = [ObjectMask(f"obj{order[r]}", "thing", masks[order[r]]) for r in ranks]
    return Sample(name, objects, image_loader=lambda: voc["rgb"])


def _config(tmp_path, **changes) -> TrainConfig:
    base = dict(
        steps=4, batch_size=1, points_per_object=2, lr=5e-4, grid=SMALL_GRID, shift=TWO_LAYERS,
        val_seeds=1, val_every=2, cache_dir=str(tmp_path / "cache") if tmp_path else None, progress=False,
    )
    return TrainConfig(**{**base, **changes})


def _loss_and_distance(trainer: ShiftBlockTrainer, objects, clicks) -> tuple[float, float]:
    trainer.block.eval()
    with torch.no_grad():
        groups = trainer.forward_objects(objects, clicks)
    n = sum(g[2] for g in groups)
    loss = sum(float(terms.total) * k for terms, _, k, _ in groups) / n
    dist = sum(float(nearest_candidate_distance(refined, cands).mean()) * k for _, refined, k, cands in groups) / n
    return loss, dist


# --- learning ---------------------------------------------------------------------------------


def test_training_lowers_compound_loss_and_distance_to_candidates(sam2_engine, voc, voc_feature_cache):
    """Overfit a fixed small set of clicks: the compound loss and the mean distance of the refined
    points to their nearest candidate both go down (the block learns to move clicks)."""
    config = TrainConfig(steps=8, batch_size=2, points_per_object=2, lr=5e-4, grid=SMALL_GRID, shift=TWO_LAYERS,
                         val_seeds=0, progress=False)
    candidates = CandidateGenerator(sam2_engine, config.grid, config.eps)
    objects = prepare_objects([_voc_sample(voc, [0, 1])], voc_feature_cache, candidates)
    trainer = ShiftBlockTrainer(sam2_engine, config, objects, [], voc_feature_cache)
    clicks = {o.key: click_points(o.mask(), np.random.default_rng([7, i]), 2) for i, o in enumerate(objects)}

    def batch_clicks():
        return [clicks[trainer.train_objects[i].key] for i in trainer.batch_for_step(trainer.step)]

    all_clicks = [clicks[o.key] for o in objects]
    loss_before, dist_before = _loss_and_distance(trainer, objects, all_clicks)
    rows = [trainer.train_step(batch_clicks()) for _ in range(config.steps)]
    loss_after, dist_after = _loss_and_distance(trainer, objects, all_clicks)

    assert all(np.isfinite(r["loss"]) for r in rows)
    print(f"loss {loss_before:.4f} -> {loss_after:.4f}, distance {dist_before:.4f} -> {dist_after:.4f}")
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    assert dist_after < dist_before - 0.01, (dist_before, dist_after)
    # SAM2 stayed frozen: nothing but the shift block has gradients or changed.
    assert all(p.grad is None for p in sam2_engine.model.parameters())


def test_dice_term_alone_reaches_the_block_through_frozen_sam2(sam2_engine, voc, voc_feature_cache):
    config = TrainConfig(steps=1, batch_size=1, points_per_object=2, beta=0.0, gamma=0.0, grid=SMALL_GRID,
                         shift=TWO_LAYERS, val_seeds=0, progress=False)
    objects = prepare_objects(
        [_voc_sample(voc, [2])], voc_feature_cache, CandidateGenerator(sam2_engine, config.grid)
    )
    trainer = ShiftBlockTrainer(sam2_engine, config, objects, [], voc_feature_cache)
    row = trainer.train_step()
    assert row["distance"] > 0 and row["dice"] > 0  # logged, though only Dice is weighted
    assert row["loss"] == pytest.approx(row["dice"])
    grads = [p.grad for p in trainer.block.parameters()]
    assert trainer.block.phi.weight.grad is not None and trainer.block.phi.weight.grad.abs().sum() > 0
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) >= len(grads) // 2
    assert all(p.grad is None for p in sam2_engine.model.parameters())


def test_objects_of_different_images_share_one_decoder_call(sam2_engine, voc, voc_feature_cache):
    """Clicks on two images of one size are stacked into one refine + decode; same numbers as apart."""
    from rpsam2_backend.engine.features import ImageFeatures
    from trainer.feature_cache import image_content_hash

    flipped_rgb = np.ascontiguousarray(voc["rgb"][:, ::-1])
    feats = voc_feature_cache.get(voc["rgb"])
    table = {  # flipped features stand in for a second encoded image: no encoder run
        image_content_hash(voc["rgb"]): feats,
        image_content_hash(flipped_rgb): ImageFeatures(
            feats.image_embed.flip(-1), [t.flip(-1) for t in feats.high_res_feats], feats.orig_hw
        ),
    }

    class Features:
        def get(self, image, image_hash=None):
            return table[image_hash or image_content_hash(image)]

    first = _voc_sample(voc, [0])
    mask = np.ascontiguousarray(voc["masks"][int(first.objects[0].object_id[3:])][:, ::-1].astype(bool))
    second = Sample("voc-flipped", [ObjectMask("m", "thing", mask)], image_loader=lambda: flipped_rgb)
    config = _config(None, cache_dir=None, grid=GridSpec(target_points=4))
    objects = prepare_objects([first, second], Features(), CandidateGenerator(sam2_engine, config.grid))
    trainer = ShiftBlockTrainer(sam2_engine, config, objects, [], Features())
    clicks = [click_points(o.mask(), np.random.default_rng([3, i]), 2) for i, o in enumerate(objects)]
    with torch.no_grad():
        (joint,) = trainer.forward_objects(objects, clicks)
        apart = [trainer.forward_objects([o], [c])[0] for o, c in zip(objects, clicks, strict=True)]
    assert joint[2] == 4
    torch.testing.assert_close(joint[1], torch.cat([a[1] for a in apart]), rtol=1e-5, atol=1e-6)
    for name in ("total", "dice", "distance", "outside"):
        expected = (getattr(apart[0][0], name) + getattr(apart[1][0], name)) / 2
        torch.testing.assert_close(getattr(joint[0], name), expected, rtol=1e-4, atol=1e-5)


# --- the function API, its checkpoint directory, resume ----------------------------------------


@pytest.fixture(scope="module")
def trained_run(sam2_engine, voc, voc_feature_cache, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    config = _config(tmp)
    train = [_voc_sample(voc, [0, 1], "voc-train")]
    val = [_voc_sample(voc, [2], "voc-val")]
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

    runtime = Runtime(random_settings.with_(shift_checkpoint=str(out)), engine=sam2_engine)
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


def test_resume_continues_exactly(trained_run, sam2_engine, voc_feature_cache):
    tmp = trained_run["tmp"]
    half = _config(tmp, steps=2)
    first = train_shift_block(trained_run["train"], trained_run["val"], sam2_engine, half, tmp / "resumed",
                              feature_cache=voc_feature_cache)
    assert first.steps == 2
    rest = _config(tmp, steps=4, resume_from=str(tmp / "resumed"))
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
                          _config(tmp, resume_from=str(tmp / "never-ran")), tmp / "bad")


def test_train_config_validation_and_round_trip():
    config = TrainConfig(steps=10, grid=GridSpec(target_points=9), shift=ShiftBlockConfig(layers=3))
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for bad in ({"batch_size": 0}, {"points_per_object": 0}, {"steps": 0}, {"lr": 0.0}, {"val_seeds": -1}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


# --- the CLI ----------------------------------------------------------------------------------


def _folder_dataset(root, n_images: int = 2) -> None:
    """ROOT/images/NAME.png + ROOT/masks/NAME__<class>__<k>.png (the folder layout)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n_images):
        image = (rng.random((96, 128, 3)) * 60).astype(np.uint8)
        tool = np.zeros((96, 128), np.uint8)
        cv2.rectangle(tool, (20 + 5 * i, 30), (90, 44), 255, -1)
        blob = np.zeros((96, 128), np.uint8)
        cv2.circle(blob, (100 - 4 * i, 70), 14, 255, -1)
        image[tool > 0] = (200, 200, 220)
        image[blob > 0] = (180, 40, 40)
        cv2.imwrite(str(root / "images" / f"frame{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"frame{i}__Spatula__0.png"), tool)
        cv2.imwrite(str(root / "masks" / f"frame{i}__Gauge__0.png"), blob)


def test_cli_trains_end_to_end_on_a_folder_dataset(tmp_path, capsys):
    from trainer.cli_train import main

    _folder_dataset(tmp_path / "data")
    out = tmp_path / "shift"
    code = main([
        "--data", str(tmp_path / "data"), "--format", "folder", "--out", str(out), "--steps", "2",
        "--allow-random-weights", "--sam2-config", "configs/sam2.1/sam2.1_hiera_t.yaml", "--device", "cpu",
        "--layers", "1", "--batch-size", "1", "--points-per-object", "2", "--grid-points", "6",
        "--val-seeds", "1", "--val-fraction", "0.5", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
        "--seed", "3",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "best validation mDSC" in printed
    block = ShiftBlock.load(out)
    assert block.config.layers == 1
    meta = ShiftBlock.read_meta(out)
    assert meta["train_config"]["seed"] == 3 and meta["train_config"]["steps"] == 2
    assert meta["data"]["train"]["images"] == 1 and meta["data"]["val"]["images"] == 1
    assert meta["data"]["train"]["classes"] == {"Gauge": 1, "Spatula": 1}
    with open(out / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) >= 1
    assert (out / "curve.png").stat().st_size > 1000
    assert (out / "command.txt").read_text().startswith("rpsam2-train ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{missing}", "--format", "folder"], "does not exist"),
        (["--data", "{data}", "--format", "folder"], "checkpoint"),  # no weights, no --allow-random-weights
        (["--data", "{data}", "--format", "folder", "--fraction", "1.5"], "--fraction"),
        (["--data", "{data}", "--format", "folder", "--steps", "0"], "--steps"),
        (["--data", "{data}", "--format", "folder", "--steps", "3", "--epochs", "2"], "not allowed with"),
        (["--data", "{data}", "--format", "nope"], "--format"),
        (["--data", "{data}", "--format", "cadis", "--allow-random-weights"], "cannot load cadis"),
        (["--data", "{data}", "--format", "folder", "--allow-random-weights", "--resume", "{missing}"],
         "--resume"),
    ],
)
def test_cli_user_errors_exit_2_with_a_message(tmp_path, capsys, monkeypatch, args, message):
    from trainer.cli_train import main

    monkeypatch.setenv("RPSAM2_CHECKPOINT_DIR", str(tmp_path / "no-checkpoints"))
    _folder_dataset(tmp_path / "data", n_images=1)
    argv = [a.format(missing=tmp_path / "missing", data=tmp_path / "data") for a in args]
    argv += ["--out", str(tmp_path / "out"), "--sam2-config", "configs/sam2.1/sam2.1_hiera_t.yaml"]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "shift_block.safetensors").exists()


def test_cli_split_selection_never_trains_on_val_or_test(tmp_path):
    from trainer.cli_train import _load_data, build_parser

    _folder_dataset(tmp_path / "data", n_images=5)
    (tmp_path / "data" / "splits").mkdir()
    (tmp_path / "data" / "splits" / "val.txt").write_text("frame1\n")
    (tmp_path / "data" / "splits" / "test.txt").write_text("frame2\nframe3\n")

    def load(*extra):
        args = build_parser().parse_args(["--data", str(tmp_path / "data"), "--format", "folder", "--out", "x", *extra])
        train, val = _load_data(args)
        return sorted(s.sample_id for s in train), [s.sample_id for s in val]

    train, val = load()
    assert (train, val) == (["frame0", "frame4"], ["frame1"])
    train, val = load("--val-split", "nothing", "--val-fraction", "0")
    assert (train, val) == (["frame0", "frame1", "frame4"], [])
