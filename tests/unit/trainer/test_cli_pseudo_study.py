"""``rpsam2-pseudo-study`` (Fig. 4(a)) end to end on a tiny CaDIS-layout fixture with random-weight hiera_t."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import TINY_CONFIG
from trainer.cli import pseudo_study

H, W = 40, 56
# CaDIS ids: 7 hydrodissection cannula (-> Cannula), 19 capsulorhexis forceps, 13 phaco handpiece; 6 cornea
FRAMES = {  # two training frames (one labelled at 50 %, one pseudo-labelled), one test frame, no validation
    "Video01/Video1_frame000010.png": [(7, 4, 6, 30, 14), (19, 34, 20, 52, 36)],
    "Video03/Video3_frame000010.png": [(19, 6, 4, 24, 30), (13, 30, 8, 50, 18)],
    "Video02/Video2_frame000010.png": [(7, 4, 4, 36, 12), (13, 10, 22, 50, 34)],  # test
}


def write_cadis(root: Path) -> Path:
    rng = np.random.default_rng(1)
    colours = {7: (240, 240, 220), 19: (90, 210, 240), 13: (250, 150, 60)}
    for rel, objects in FRAMES.items():
        video, name = rel.split("/")
        label = np.full((H, W), 6, dtype=np.uint8)
        image = rng.integers(0, 50, (H, W, 3), dtype=np.uint8)
        for cid, x0, y0, x1, y1 in objects:
            label[y0:y1, x0:x1] = cid
            image[y0:y1, x0:x1] = colours[cid]
        for sub, data in (("Images", cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), ("Labels", label)):
            (root / video / sub).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / video / sub / name), data)
    return root


@pytest.mark.slow
def test_pseudo_study_runs_end_to_end(tmp_path, capsys):
    root = write_cadis(tmp_path / "CaDIS")
    out = tmp_path / "fig4a"
    rc = pseudo_study.main([
        "--data", str(root), "--out", str(out), "--fractions", "50", "--steps", "1", "--batch-size", "1",
        "--layers", "1", "--points-per-object", "2", "--grid-points", "6", "--val-seeds", "1",
        "--decoder-steps", "1", "--decoder-batch-size", "1", "--decoder-points", "1", "--seeds", "2",
        "--sam2-config", TINY_CONFIG, "--allow-random-weights", "--device", "cpu", "--cache-dir",
        str(tmp_path / "cache"), "--no-progress",
    ])
    assert rc == 0, capsys.readouterr().err
    assert "study.md" in capsys.readouterr().out
    study = json.loads((out / "study.json").read_text())
    (row,) = study["rows"]
    assert row["fraction_percent"] == 50.0
    assert (row["labelled_images"], row["pseudo_labelled_images"]) == (1, 1)
    assert set(row["methods"]) == {"sam2", "rpsam2", "sam2ft_sam2", "sam2ft_rpsam2"}
    for m in row["methods"].values():
        assert 0.0 <= m["mdsc"] <= 100.0 and m["mdsc_std"] >= 0.0 and m["mhd95"] >= 0.0
    # the pseudo-labelled part: one click per object, one mask per object and predictor (unless empty)
    objects = row["pseudo_masks"]["sam2"]["objects"] + row["pseudo_masks"]["sam2"]["empty_left_out"]
    assert objects == row["pseudo_masks"]["rpsam2"]["objects"] + row["pseudo_masks"]["rpsam2"]["empty_left_out"]
    assert objects == 2
    # one shift checkpoint, two decoders, one evaluation with the four methods
    tag = out / "x50"
    assert (tag / "shift" / "shift_block.safetensors").is_file()
    assert (tag / "decoder-sam2" / "mask_decoder.safetensors").is_file()
    assert (tag / "decoder-rpsam2" / "mask_decoder.safetensors").is_file()
    summary = json.loads((tag / "eval" / "summary.json").read_text())
    assert summary["tables"]["table1"]["methods"] == ["sam2", "rpsam2", "sam2ft_sam2", "sam2ft_rpsam2"]
    assert summary["info"]["fraction_percent"] == 50.0
    table = (out / "study.md").read_text()
    assert "SAM2-FT (RP-SAM2 pseudo-masks) mDSC(%)↑" in table and "\n| 50 | " in table
    assert (out / "study.png").stat().st_size > 2000
    assert (out / "study.csv").read_text().count("\n") == 1 + 4


def test_zero_shot_point_needs_a_block_to_start_from(tmp_path, capsys):
    root = write_cadis(tmp_path / "CaDIS")
    rc = pseudo_study.main(["--data", str(root), "--out", str(tmp_path / "o"), "--fractions", "0,10",
                            "--allow-random-weights", "--sam2-config", TINY_CONFIG])
    assert rc == 2 and "--init-from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pseudo_study.main(["--data", str(root), "--out", str(tmp_path / "o"), "--fractions", "120"])
