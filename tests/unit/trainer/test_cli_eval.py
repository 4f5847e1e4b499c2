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


def test_cli_on_cataract1k_layout_writes_the_papers_summary_rows_and_a_baseline_column(tmp_path, capsys):
    """Avg./W. Avg. ± in summary.json are the mean / object-count-weighted mean of the class stds, and a
    second random-weight SAM2 given as --baseline is its own column with its own encoder."""
    import numpy as np

    from tests.unit.trainer.support_cataract1k import write_cataract1k
    from trainer.eval.protocol import AVG_ROW, WEIGHTED_AVG_ROW

    root = write_cataract1k(tmp_path / "Cataract-1K")
    out = tmp_path / "out"
    rc = cli_eval.main([
        "--data", str(root), "--format", "cataract1k", "--split", "test", "--methods", "sam2", "--seeds", "3",
        "--out", str(out), "--sam2-config", TINY_CONFIG, "--allow-random-weights", "--device", "cpu",
        "--baseline", f"tiny2={TINY_CONFIG}:random", "--no-progress",
    ])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    table = summary["tables"]["table1"]
    assert table["methods"] == ["sam2", "tiny2"]
    assert table["objects_per_class"] == {"Gauge": 1, "Spatula": 2}
    cells = {(c["method"], c["row"], c["metric"]): c for c in table["cells"]}
    differs_from_old = []
    for method in ("sam2", "tiny2"):
        for metric in ("dice", "hd95"):
            stds = {c: cells[(method, c, metric)]["std"] for c in ("Gauge", "Spatula")}
            per_seed = {c: [v for _, v in sorted(cells[(method, c, metric)]["per_seed"].items())]
                        for c in ("Gauge", "Spatula")}
            assert all(stds[c] == pytest.approx(np.std(per_seed[c]), abs=1e-12) for c in stds)
            assert cells[(method, AVG_ROW, metric)]["std"] == pytest.approx((stds["Gauge"] + stds["Spatula"]) / 2)
            assert cells[(method, WEIGHTED_AVG_ROW, metric)]["std"] == pytest.approx(
                (1 * stds["Gauge"] + 2 * stds["Spatula"]) / 3)
            for row, weights in ((AVG_ROW, [1, 1]), (WEIGHTED_AVG_ROW, [1, 2])):
                # the old statistic: the std across seeds of the per-seed (weighted) mean over the classes
                old = np.std(np.average([per_seed["Gauge"], per_seed["Spatula"]], axis=0, weights=weights))
                differs_from_old.append(abs(cells[(method, row, metric)]["std"] - old) > 1e-6)
    # random weights give Dice 0 everywhere (0 == 0 for both statistics): some cell must tell them apart
    assert any(differs_from_old)
    # the baseline decodes its own masks (other random weights) from its own encoder, on the same points
    rows = read_scores_csv(out / "scores.csv")
    by = {(r["method"], r["seed"], r["sample_id"], r["object_id"]): r for r in rows}
    assert len(rows) == 2 * 3 * 3
    assert all(by[("tiny2", *k[1:])]["points"] == r["points"] for k, r in by.items() if k[0] == "sam2")
    assert any(by[("tiny2", *k[1:])]["dice"] != r["dice"] for k, r in by.items() if k[0] == "sam2")
    info = summary["info"]
    assert info["encoder_calls"] == 2 and info["baseline_encoder_calls"] == {"tiny2": 2}
    params = {m: info["methods"][m]["trainable_parameters"] for m in ("sam2", "tiny2")}
    assert params["sam2"] == params["tiny2"] > 30e6  # hiera_t: the whole model, 38.9M
    report = (out / "report.md").read_text()
    assert f"| Classes | SAM2 ({params['sam2'] / 1e6:.1f}M) mDSC(%)↑" in report
    assert f"tiny2 ({params['tiny2'] / 1e6:.1f}M) mDSC(%)↑" in report
    assert "per-object means over seeds** (headline)" in report


@pytest.mark.parametrize(("value", "message"), [
    ("tiny2", "NAME=CONFIG:CHECKPOINT"),
    ("sam2=cfg.yaml:random", "is taken"),
    ("x=cfg.yaml:/nonexistent.pt", "does not exist"),
    ("bad name=cfg.yaml:random", "NAME may hold"),
])
def test_cli_bad_baselines_exit_2(value, message, eval_data_root, tmp_path, capsys):
    rc = cli_eval.main(["--data", str(eval_data_root), "--format", "folder", "--methods", "sam2",
                        "--out", str(tmp_path / "o"), "--allow-random-weights", "--sam2-config", TINY_CONFIG,
                        "--baseline", value])
    assert rc == 2 and message in capsys.readouterr().err


def test_cli_random_baseline_needs_the_flag(eval_data_root, tmp_path, capsys):
    rc = cli_eval.main(["--data", str(eval_data_root), "--format", "folder", "--methods", "sam2",
                        "--out", str(tmp_path / "o"), "--sam2-config", TINY_CONFIG,
                        "--baseline", f"t={TINY_CONFIG}:random"])
    assert rc == 2 and "--allow-random-weights" in capsys.readouterr().err
