"""What ``evaluate`` writes: report.md, scores.csv, summary.json and the heatmap PNGs.  Uses ``eval_run``."""

from __future__ import annotations

from pathlib import Path

import cv2

from tests.conftest import TINY_CONFIG
from tests.unit.trainer.support_eval import SEEDS
from trainer.eval.results import object_key
from trainer.scores import EMPTY_HD95_POLICY


def test_report_csv_json_and_heatmaps_are_written(eval_run):
    result = eval_run["result"]
    report = result.report_path.read_text()
    for text in ("±", "forceps", "knife", "Table 1", "Table 2", "W. Avg.", "Wilcoxon signed-rank",
                 "SAM2-FT", "RP-SAM2", EMPTY_HD95_POLICY, "RANDOM WEIGHTS", "no difference", TINY_CONFIG):
        assert text in report, text
    assert result.scores_path.stat().st_size > 0
    summary = eval_run["summary"]
    assert summary["info"]["seeds"] == list(range(SEEDS))
    assert set(summary["tables"]) == {"table1", "table2_2pt"}
    assert summary["hd95_empty_policy"] == EMPTY_HD95_POLICY

    assert len(result.heatmaps) == 1
    heat = result.heatmaps[0]
    first = eval_run["dataset"][0]
    assert heat.key == object_key(first.sample_id, first.objects[0].object_id)
    png = Path(heat.png)
    assert png.is_file() and png.stat().st_size > 0
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 50 and image.shape[1] > 200
    assert f"]({png.relative_to(result.out_dir).as_posix()})" in report
    assert summary["heatmaps"][0]["grid_points"] == len(heat.grid) >= 4
    assert set(heat.dice) == {"sam2", "rpsam2", "moved", "sam2ft"}
