"""``rpsam2-train`` end to end on a tiny folder dataset, its usage errors and its split selection."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from rpsam2_backend.engine.modeling.shift_block import ShiftBlock


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
    from trainer.cli.train import main

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
    from trainer.cli.train import main

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
    from trainer.cli.train import _load_data, build_parser

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


def test_paper_preset_splits_60_20_20_of_the_whole(tmp_path):
    """§3.1: train/val/test 60/20/20.  Without a validation split the paper preset carves 25 % of the training
    samples (80 % of the frames when the test split holds 20 %), the default 20 % of them (64/16/20)."""
    from trainer.cli.common import PAPER_PRESET, resolve_preset
    from trainer.cli.train import _load_data, build_parser

    _folder_dataset(tmp_path / "data", n_images=20)
    (tmp_path / "data" / "splits").mkdir()
    (tmp_path / "data" / "splits" / "test.txt").write_text("".join(f"frame{i}\n" for i in range(16, 20)))

    def sizes(*extra):
        args = build_parser().parse_args(["--data", str(tmp_path / "data"), "--format", "folder", "--out", "x",
                                          "--cache-dir", "none", *extra])
        record = resolve_preset(args, PAPER_PRESET)
        train, val = _load_data(args)
        assert not {s.sample_id for s in val} & {s.sample_id for s in train}
        return (len(train), len(val)), record

    (paper, record) = sizes("--paper")
    assert paper == (12, 4) and record["preset_values"]["val_fraction"] == 0.25  # 60/20/20 with the 4 test frames
    assert sizes()[0] == (13, 3)  # round(0.2 x 16): 65/15/20
    (explicit, record) = sizes("--paper", "--val-fraction", "0.2")
    assert explicit == (13, 3) and record["overrides"] == {"val_fraction": 0.2}


def test_paper_preset_sets_the_papers_training(tmp_path):
    from trainer.cli.common import HIERA_L, PAPER_PRESET, resolve_preset
    from trainer.cli.train import _config, build_parser

    def config_for(*extra):
        args = build_parser().parse_args(["--data", "d", "--format", "folder", "--out", "o", "--cache-dir", "none",
                                          *extra])
        record = resolve_preset(args, PAPER_PRESET)
        return args, _config(args), record

    args, config, record = config_for("--paper")
    assert args.sam2_config == HIERA_L and record["preset"] == "paper" and record["overrides"] == {}
    assert (config.epochs, config.batch_size, config.lr, config.points_per_object) == (1500, 4, 1e-4, 10)
    recipe = (config.lr_schedule, config.lr_final_ratio, config.weight_decay, config.grad_clip)
    assert recipe == ("cosine", 0.1, 0.1, 0.1)
    assert config.augment and config.outside_loss == "below_half" and config.eps == 0.005
    assert (config.alpha, config.beta, config.gamma, config.theta) == (1.0, 0.1, 1.0, 15.0)
    assert (config.shift.layers, config.shift.scale_init, config.shift.scale_init_mode) == (6, 0.1, "raw")
    assert config.train_clicks == "grid"  # "a grid sampling of points in each object and refine 10 random points"

    args, config, record = config_for("--paper", "--layers", "2", "--no-augment", "--train-clicks", "area")
    assert config.shift.layers == 2 and not config.augment and config.epochs == 1500
    assert config.train_clicks == "area"
    assert record["overrides"] == {"layers": 2, "augment": False, "train_clicks": "area"}

    args, config, record = config_for()  # no preset: the fast defaults (cached path, 50 epochs)
    assert record["preset"] is None and args.sam2_config is None
    assert config.epochs == 50 and not config.augment and config.weight_decay == 0.1 and config.grad_clip == 0.1
    assert config.train_clicks == "area"
    args, config, _ = config_for("--outside-loss", "always", "--scale-init-mode", "sigma", "--lr-schedule", "constant")
    assert config.outside_loss == "always" and config.lr_schedule == "constant"
    assert config.shift.scale_init_mode == "sigma"


def test_paper_preset_runs_and_is_written_to_the_runs_json(tmp_path, capsys):
    """--paper with a tiny model and one step: the augmented path end to end, the preset in training.json."""
    import json

    from tests.unit.trainer.support_cataract1k import write_cataract1k
    from trainer.cli.train import main

    root = write_cataract1k(tmp_path / "Cataract-1K")
    out = tmp_path / "paper"
    code = main([
        "--paper", "--data", str(root), "--format", "cataract1k", "--out", str(out), "--steps", "1",
        "--batch-size", "1", "--layers", "1", "--grid-points", "6", "--val-fraction", "0", "--device", "cpu",
        "--allow-random-weights", "--sam2-config", "configs/sam2.1/sam2.1_hiera_t.yaml", "--cache-dir", "none",
        "--no-progress",
    ])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert printed.startswith("{") and '"preset": "paper"' in printed.splitlines()[0]
    training = json.loads((out / "training.json").read_text())
    run = training["run"]
    assert run["preset"] == "paper" and run["preset_values"]["epochs"] == 1500
    assert run["overrides"] == {"sam2_config": "configs/sam2.1/sam2.1_hiera_t.yaml", "batch_size": 1,
                                "layers": 1, "steps": 1, "val_fraction": 0.0}
    assert run["command"].startswith("rpsam2-train --paper")
    assert training["config"]["augment"] is True and training["config"]["epochs"] == 1500
    assert training["cache"]["candidates_computed"] == 0  # augmented: candidates found per step instead
    assert training["result"]["steps"] == 1
