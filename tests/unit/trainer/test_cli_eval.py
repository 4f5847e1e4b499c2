"""``rpsam2-eval`` end to end on the evaluation tests' folder dataset, and its usage errors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_CONFIG
from tests.unit.trainer.support_eval import shift_block
from trainer.cli import eval as cli_eval
from trainer.eval.report import read_scores_csv


def test_cli_runs_end_to_end(eval_data_root, tmp_path, capsys):
    ckpt = shift_block(None).save(tmp_path / "shift")
    out = tmp_path / "out"
    rc = cli_eval.main([
        "--data", str(eval_data_root), "--format", "folder", "--split", "one", "--methods", "sam2,rpsam2",
        "--seeds", "1", "--out", str(out), "--sam2-config", TINY_CONFIG, "--allow-random-weights",
        "--shift-checkpoint", str(ckpt), "--device", "cpu", "--heatmap-objects", "img1::knife__0",
        "--heatmap-points", "4", "--no-progress", "--cache-dir", str(tmp_path / "cache"),
    ])
    assert rc == 0
    assert "report:" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "±" in report and "knife" in report and "rpsam2-eval --data" in report
    rows = read_scores_csv(out / "scores.csv")
    assert {r["sample_id"] for r in rows} == {"img1"} and len(rows) == 2 * 2
    assert len(list((out / "heatmaps").glob("*.png"))) == 1
    assert json.loads((out / "summary.json").read_text())["info"]["encoder_calls"] == 1
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 1  # the feature cache was used


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "sam2,rpsam2"], "--shift-checkpoint"),
        (["--methods", "sam2,sam2ft"], "--decoder-checkpoint"),
        (["--methods", "sam2,rpsam2", "--shift-checkpoint", "/nonexistent/shift"], "does not exist"),
        (["--methods", "sam2,bogus"], "unknown"),
        (["--split", "empty"], "no annotated objects"),
        (["--split", "nosuchsplit"], "cannot load folder data"),
        (["--data", "/nonexistent/data"], "does not exist"),
        (["--format", "coco"], "invalid choice"),
        (["--heatmap-objects", "img9::x__0"], "not in the dataset"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(args, message, eval_data_root, tmp_path, capsys):
    base = {"--data": str(eval_data_root), "--format": "folder", "--split": "test", "--methods": "sam2",
            "--out": str(tmp_path / "out")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [x for kv in base.items() for x in kv] + ["--allow-random-weights", "--sam2-config", TINY_CONFIG]
    try:
        rc = cli_eval.main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "report.md").exists()
