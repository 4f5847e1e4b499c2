"""The benchmark harness on the tiniest inputs, one repetition: structure and honesty checks only.

No timing is asserted (benchmarks/ reports ratios; the tests only make sure the harness runs and
that its built-in equality checks really run).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_candidates, bench_rle, common, run
from benchmarks.common import TABLE_HEADER, Row
from rpsam2_backend.labelstudio.brush import mask_to_rle


def tiny_mask() -> np.ndarray:
    mask = np.zeros((6, 9), dtype=np.uint8)
    mask[1:4, 2:7] = 255
    mask[5, 0] = 255
    return mask


def test_rle_benchmark_row_on_a_tiny_mask():
    (row,) = bench_rle.run(reps=1, mask=tiny_mask())
    assert len(row.cells()) == len(TABLE_HEADER)
    assert row.measurement.startswith("RLE 9x6")
    assert row.values["sdk_s"] > 0 and row.values["ours_s"] > 0
    assert row.met is (row.values["ratio"] >= bench_rle.TARGET)


def test_rle_benchmark_refuses_an_encoder_whose_output_differs():
    def corrupted(mask: np.ndarray) -> list[int]:
        out = list(mask_to_rle(mask))
        out[-1] ^= 1
        return out

    with pytest.raises(AssertionError, match="differs from label_studio_sdk"):
        bench_rle.run(reps=1, mask=tiny_mask(), ours=corrupted)


def test_harness_reports_a_failing_benchmark_as_an_error_row(monkeypatch):
    def broken(quick: bool) -> list[Row]:
        return bench_rle.run(reps=1, mask=tiny_mask(), ours=lambda m: [0])

    monkeypatch.setitem(run.BENCHMARKS, "rle", broken)
    rows = run.run_benchmarks(["rle"], quick=True, log=lambda _: None)
    assert [(r.measurement, r.a, r.met) for r in rows] == [("rle", "ERROR", False)]
    assert "AssertionError" in rows[0].b


def test_tables_and_readme_section(tmp_path):
    rows = bench_rle.run(reps=1, mask=tiny_mask())
    rows.append(Row("no target", "a 1", "b 2", "0.5x", "(report)", None))
    text = common.text_table(rows).splitlines()
    assert text[0].split() == list(TABLE_HEADER) and len(text) == 2 + len(rows)
    md = common.markdown_table(rows).splitlines()
    assert len(md) == 2 + len(rows) and all(line.count("|") == len(TABLE_HEADER) + 1 for line in md)
    assert md[-1].endswith("| - |")  # no target: neither met nor missed

    readme = tmp_path / "README.md"
    readme.write_text(f"# Bench\n\nhand-written analysis\n\n{run.BEGIN}\nold table\n{run.END}\n\nfooter\n")
    info = common.machine_info()
    run.write_readme(run.generated_section(rows, info, quick=True, seconds=1.0), readme)
    first = readme.read_text()
    assert "hand-written analysis" in first and first.rstrip().endswith("footer")
    assert "old table" not in first and "| RLE 9x6" in first and info["versions"] in first
    run.write_readme(run.generated_section(rows[:1], info, quick=True, seconds=2.0), readme)
    second = readme.read_text()
    assert second.count(run.BEGIN) == 1 and "no target" not in second


def test_candidate_benchmark_on_two_points(monkeypatch, sam2_engine, voc):
    monkeypatch.setitem(common._ENGINES, common.TINY_CONFIG, sam2_engine)
    image = voc["rgb"][:96, :128].copy()
    gt = np.zeros(image.shape[:2], dtype=bool)
    gt[30:70, 40:100] = True
    features = sam2_engine.encode(image)
    (row,) = bench_candidates.run(reps=1, target_points=2, image=image, gt=gt, features=features, profile=False)
    assert len(row.cells()) == len(TABLE_HEADER)
    assert row.values["points"] >= 1 and row.values["max_dice_difference"] <= bench_candidates.DICE_TOLERANCE
    assert row.met is (row.values["ratio"] >= bench_candidates.TARGET)


def test_video_benchmark_on_three_small_frames(sam2_engine, video_engine, voc):
    from benchmarks import bench_video

    assert run.BENCHMARKS["video"] is bench_video.run
    image = voc["rgb"][:96, :128].copy()
    gt = np.zeros(image.shape[:2], dtype=bool)
    gt[30:70, 40:100] = True
    (row,) = bench_video.run(n=3, image=image, gt=gt, video=video_engine, image_engine=sam2_engine)
    assert len(row.cells()) == len(TABLE_HEADER) and row.met is None
    assert row.values["frames"] == 2 and row.values["propagate_fps"] > 0 and row.values["image_fps"] > 0
    assert row.values["ratio"] == row.values["propagate_fps"] / row.values["image_fps"]
    assert row.measurement == "video propagation, hiera_t, 2 frames 115x86, 1 object"
