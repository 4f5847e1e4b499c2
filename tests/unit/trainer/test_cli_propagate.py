"""``rpsam2-propagate`` on a folder of generated frames, and its usage errors (exit 2, one line)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rpsam2_backend.engine.video import tracker
from tests.conftest import TINY_CONFIG
from tests.support.video_clip import moving_clip, save_frames
from trainer.cli import propagate as cli
from trainer.video.folder import list_frames, natural_key

MODEL = ["--sam2-config", TINY_CONFIG, "--allow-random-weights", "--device", "cpu"]


@pytest.fixture
def clip(tmp_path, monkeypatch, video_engine):
    """frame_1.png .. frame_10.png (name order differs from text order) and the masks of frame 3."""
    monkeypatch.setenv("RPSAM2_PROPAGATE_IMAGE_SIZE", "128")
    monkeypatch.setitem(tracker._shared, (TINY_CONFIG, None, "cpu", 128), video_engine)  # no second build
    images, masks = moving_clip(10)
    frames = tmp_path / "frames"
    save_frames(frames, images, name="frame_{}.png")
    (frames / "notes.txt").write_text("not a frame")
    for label in ("Tool", "Knife"):
        Image.fromarray(masks[2][label].astype(np.uint8) * 255).save(tmp_path / f"{label}.png")
    return tmp_path, images, masks


def test_masks_are_written_per_frame_and_label_forward_and_backward(clip, capsys, video_engine):
    root, images, masks = clip
    out = root / "out"
    rc = cli.main(["--frames", str(root / "frames"), "--mask", f"Tool={root / 'Tool.png'}",
                   "--mask", f"Knife={root / 'Knife.png'}", "--start", "frame_3.png", "--count", "2",
                   "--backward", "--min-confidence", "0", "--out", str(out), "--no-progress", *MODEL])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["frame_1", "frame_2", "frame_4", "frame_5", "propagation.json"]
    assert sorted(p.name for p in (out / "frame_4").iterdir()) == ["Knife.png", "Tool.png"]
    (direct,) = video_engine.propagate(images, 2, {"Tool": masks[2]["Tool"], "Knife": masks[2]["Knife"]},
                                       forward=1, min_confidence=0.0)
    written = np.asarray(Image.open(out / "frame_4" / "Tool.png"))
    assert written.shape == (96, 128) and set(np.unique(written)) <= {0, 255}
    assert np.array_equal(written > 0, direct.objects["Tool"].mask)
    summary = json.loads((out / "propagation.json").read_text())
    assert [f["frame"] for f in summary["frames"]] == ["frame_4.png", "frame_5.png", "frame_2.png", "frame_1.png"]
    assert [f["distance"] for f in summary["frames"]] == [1, 2, -1, -2]
    assert summary["frames"][0]["objects"]["Tool"]["confidence"] == direct.objects["Tool"].confidence
    assert "4 frames, 8 masks written" in capsys.readouterr().out


def test_a_drifting_object_stops_and_is_reported(clip, capsys):
    root, _, _ = clip
    out = root / "out"
    rc = cli.main(["--frames", str(root / "frames"), "--mask", f"Tool={root / 'Tool.png'}", "--start", "frame_3",
                   "--count", "3", "--out", str(out), "--no-progress", *MODEL])  # default threshold 0.3
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["frame_4", "propagation.json"]
    assert "stopped: Tool at frame_4.png (confidence " in capsys.readouterr().out


def test_frames_sort_by_name_with_numbers_as_numbers(tmp_path):
    for name in ("f_10.png", "f_2.png", "f_1.jpg", "readme.md"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_frames(tmp_path)] == ["f_1.jpg", "f_2.png", "f_10.png"]
    assert natural_key("a10") > natural_key("a9")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--mask": ["Tool"]}, "--mask 'Tool': expected LABEL=PATH"),
        ({"--mask": []}, "give at least one --mask LABEL=PATH"),
        ({"--mask": ["Tool={root}/missing.png"]}, "missing.png does not exist"),
        ({"--mask": ["a/b={root}/Tool.png"]}, "cannot contain '/'"),
        ({"--mask": ["Tool={root}/Tool.png", "Tool={root}/Knife.png"]}, "label 'Tool' is given twice"),
        ({"--mask": ["Tool={root}/small.png"]}, "small.png is 64x48 but the start frame is 128x96"),
        ({"--mask": ["Tool={root}/empty.png"]}, "empty.png is empty: nothing to propagate"),
        ({"--start": "frame_99.png"}, "--start 'frame_99.png' is not a frame of"),
        ({"--frames": "{root}/nowhere"}, "--frames: frames folder"),
        ({"--count": "0"}, "--count must be >= 1"),
        ({"--min-confidence": "2"}, "--min-confidence must be between 0 and 1"),
    ],
)
def test_usage_errors_exit_2_with_one_line(clip, capsys, change, message):
    root, _, _ = clip
    Image.fromarray(np.full((48, 64), 255, np.uint8)).save(root / "small.png")
    Image.fromarray(np.zeros((96, 128), np.uint8)).save(root / "empty.png")
    args = {"--frames": str(root / "frames"), "--mask": [f"Tool={root / 'Tool.png'}"], "--start": "frame_3.png",
            "--count": "1", "--out": str(root / "out"), **change}
    argv = ["--no-progress", *MODEL]
    for flag, value in args.items():
        for item in value if isinstance(value, list) else [value]:
            argv += [flag, item.format(root=root)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rpsam2-propagate: error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("flag", "env", "expected"), [
    ([], "0", False), (["--offload-state"], "0", True), ([], "1", True), (["--no-offload-state"], "1", False),
])
def test_offload_state_comes_from_the_flag_or_the_setting_and_leaves_the_masks_alone(
        clip, monkeypatch, flag, env, expected):
    root, _, _ = clip
    monkeypatch.setenv("RPSAM2_PROPAGATE_OFFLOAD_STATE", env)
    seen: list[bool] = []
    real = tracker.new_state

    def recording(predictor, images, offload):
        seen.append(offload)
        return real(predictor, images, offload)

    monkeypatch.setattr(tracker, "new_state", recording)
    outs = []
    for name, extra in (("plain", ["--no-offload-state"]), ("asked", flag)):
        outs.append(root / name)
        assert cli.main(["--frames", str(root / "frames"), "--mask", f"Tool={root / 'Tool.png'}", "--start", "frame_3",
                         "--count", "2", "--min-confidence", "0", "--out", str(outs[-1]), "--no-progress",
                         *extra, *MODEL]) == 0
    assert seen == [False, expected]
    for frame in ("frame_4", "frame_5"):
        assert np.array_equal(np.asarray(Image.open(outs[0] / frame / "Tool.png")),
                              np.asarray(Image.open(outs[1] / frame / "Tool.png")))
