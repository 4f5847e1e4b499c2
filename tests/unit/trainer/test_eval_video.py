"""``rpsam2-eval --video``: runs cut at gaps, seeds per class, per-distance scores and their aggregation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_CONFIG
from tests.support.video_clip import moving_clip
from tests.unit.trainer.support_eval import shift_block
from trainer.cli import eval as cli_eval
from trainer.datasets.base import Dataset, ObjectMask, Sample
from trainer.eval.video import VideoScore, aggregate, seeds_of_run, video_runs
from trainer.scores import dice, hd95


def _sample(name: str, classes: tuple[str, ...] = ("Tool",)) -> Sample:
    return Sample(name, [ObjectMask(c, c, np.ones((2, 2), bool)) for c in classes])


def test_runs_are_cut_at_gaps_and_each_class_is_seeded_where_it_first_appears():
    data = Dataset([_sample("/d/case0001_01.png"), _sample("/d/case0001_02.png", ("Tool", "Knife")),
                    _sample("/d/case0001_03.png"), _sample("/d/case0001_05.png"),
                    _sample("/c/Video01/Images/Video1_frame000090.png"), _sample("/d/other.png")])
    runs = video_runs(data)
    assert {v: [[f for f, _ in run] for run in r] for v, r in runs.items()} == {
        "Video01": [[90]], "case0001": [[1, 2, 3], [5]]}
    assert seeds_of_run(runs["case0001"][0]) == {0: ["Tool"], 1: ["Knife"]}


def test_a_class_is_seeded_on_the_first_frame_where_its_mask_has_pixels():
    empty_knife = Sample("/d/case0001_01.png", [ObjectMask("t", "Tool", np.ones((2, 2), bool)),
                                                 ObjectMask("k", "Knife", np.zeros((2, 2), bool))])
    run = [(1, empty_knife), (2, _sample("/d/case0001_02.png", ("Tool", "Knife")))]
    assert seeds_of_run(run) == {0: ["Tool"], 1: ["Knife"]}


def test_aggregation_is_mean_over_tracks_per_prompt_then_mean_and_std_across_prompts():
    def row(prompt, d, dsc, hd):
        return VideoScore("m", prompt, "v", "c", 1, 1 + d, d, dsc, hd, False)

    table = aggregate([row(0, 1, 0.8, 2.0), row(0, 1, 0.6, 4.0), row(1, 1, 0.4, 6.0), row(1, 1, 0.2, 8.0),
                       row(0, 2, 0.5, 1.0), row(1, 2, 0.5, 1.0)])
    assert table["m"][1] == pytest.approx({"mdsc": 0.5, "mdsc_std": 0.2, "mhd95": 5.0, "mhd95_std": 2.0,
                                           "n": 2, "prompts": 2})
    assert table["m"][2]["mdsc_std"] == 0.0 and table["m"][2]["n"] == 1


@pytest.fixture
def clip_dataset(tmp_path):
    """Folder layout: images/case0001_0k.png and masks/case0001_0k__Tool__0.png, 5 frames."""
    images, masks = moving_clip(5)
    for k, (image, objects) in enumerate(zip(images, masks, strict=True), start=1):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / "images" / f"case0001_{k:02d}.png")
        mask = Image.fromarray(objects["Tool"].astype(np.uint8) * 255)
        mask.save(tmp_path / "masks" / f"case0001_{k:02d}__Tool__0.png")
    return tmp_path, images, masks


def test_cli_video_mode_scores_each_distance_for_mask_and_click_seeds(clip_dataset, tmp_path, monkeypatch,
                                                                      sam2_engine, video_engine, capsys):
    root, images, masks = clip_dataset
    monkeypatch.setattr(cli_eval, "build_engine", lambda args: sam2_engine)
    monkeypatch.setattr("trainer.cli.common.build_video_engine", lambda args: video_engine)
    ckpt = shift_block(None).save(tmp_path / "shift")  # φ = 0: the refined click is the click itself
    out = tmp_path / "out"
    rc = cli_eval.main(["--video", "--data", str(root), "--format", "folder", "--split", "all", "--methods",
                        "sam2,rpsam2", "--shift-checkpoint", str(ckpt), "--seeds", "2", "--max-distance", "2",
                        "--out", str(out), "--sam2-config", TINY_CONFIG, "--allow-random-weights", "--no-progress"])
    assert rc == 0 and "report:" in capsys.readouterr().out
    summary = json.loads((out / "video_summary.json").read_text())
    assert list(summary["methods"]) == ["sam2", "sam2-click", "rpsam2"]
    table = summary["table"]
    assert set(table["sam2"]) == {"1", "2"}
    assert table["sam2"]["1"]["prompts"] == 1 and table["rpsam2"]["1"]["prompts"] == 2
    # the mask seed's distance-1 score is the Dice of sam2's propagated mask against the truth
    (frame,) = video_engine.propagate(images, 0, {"Tool": masks[0]["Tool"]}, forward=1, min_confidence=0.0)
    assert table["sam2"]["1"]["mdsc"] == pytest.approx(dice(frame.objects["Tool"].mask, masks[1]["Tool"]))
    assert table["sam2"]["1"]["mhd95"] == pytest.approx(hd95(frame.objects["Tool"].mask, masks[1]["Tool"]))
    assert table["rpsam2"] == table["sam2-click"]  # a zero shift changes nothing
    report = (out / "video_report.md").read_text()
    assert "| distance | sam2 mDSC | sam2 mHD95 | sam2-click mDSC" in report and "\n| 2 | " in report
    rows = (out / "video_scores.csv").read_text().splitlines()
    assert rows[0].startswith("method,prompt,video,class_name,seed_frame,frame,distance,dice")
    assert len(rows) == 1 + 2 * (1 + 2 + 2)  # distances 1, 2 x (1 mask prompt + 2 click prompts x 2 methods)


def test_cli_video_mode_usage_errors(clip_dataset, tmp_path, capsys):
    root, _, _ = clip_dataset
    base = ["--video", "--data", str(root), "--format", "folder", "--split", "all", "--out", str(tmp_path / "o")]
    assert cli_eval.main([*base, "--methods", "sam2", "--max-distance", "0"]) == 2
    assert "--max-distance must be >= 1" in capsys.readouterr().err
    assert cli_eval.main([*base, "--methods", "sam2,sam2ft", "--decoder-checkpoint", str(tmp_path)]) == 2
    assert "sam2ft is not a video seed" in capsys.readouterr().err
