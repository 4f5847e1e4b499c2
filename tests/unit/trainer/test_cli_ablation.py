"""``rpsam2-ablation`` (Fig. 4(b)): the variants, and the command end to end on a tiny Cataract-1K layout."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_CONFIG
from tests.unit.trainer.support_cataract1k import write_cataract1k
from trainer.cli import ablation
from trainer.shift.config import TrainConfig
from trainer.studies.ablation import ablation_variants


def test_variants_change_one_thing_of_the_base_each():
    base = TrainConfig()
    variants = ablation_variants(base)
    assert [(v.group, v.label) for v in variants] == [
        ("loss terms", "L_dice"), ("loss terms", "+ L_dist"), ("loss terms", "+ L_out"),
        ("refined points per object", "6 points"), ("refined points per object", "8 points"),
        ("refined points per object", "10 points"), ("layers", "2 layers"), ("layers", "6 layers"),
    ]
    weights = [(v.config.alpha, v.config.beta, v.config.gamma) for v in variants[:3]]
    assert weights == [(1.0, 0.0, 0.0), (1.0, 0.1, 0.0), (1.0, 0.1, 1.0)]
    assert [v.config.points_per_object for v in variants[3:6]] == [6, 8, 10]
    assert [v.config.shift.layers for v in variants[6:]] == [2, 6]
    # the full method appears once per group, identical to the base
    assert variants[2].config == variants[5].config == variants[7].config == base
    with pytest.raises(ValueError, match="unknown loss"):
        ablation_variants(base, ["dice+out"])


@pytest.mark.slow
def test_ablation_runs_end_to_end(tmp_path, capsys):
    root = write_cataract1k(tmp_path / "Cataract-1K")
    out = tmp_path / "fig4b"
    rc = ablation.main([
        "--data", str(root), "--format", "cataract1k", "--out", str(out), "--val-fraction", "0",
        "--steps", "1", "--batch-size", "1", "--layers", "1", "--points-per-object", "2", "--grid-points", "6",
        "--points", "1,2", "--layers-options", "1,2", "--seeds", "2", "--sam2-config", TINY_CONFIG,
        "--allow-random-weights", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
    ])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((out / "ablation.json").read_text())
    rows = result["rows"]
    assert [(r["group"], r["variant"]) for r in rows] == [
        ("loss terms", "L_dice"), ("loss terms", "+ L_dist"), ("loss terms", "+ L_out"),
        ("refined points per object", "1 points"), ("refined points per object", "2 points"),
        ("layers", "1 layers"), ("layers", "2 layers"),
    ]
    # 5 distinct trainings: dice, dice+dist, full (= 2 points = 1 layer), 1 point, 2 layers
    assert result["runs_trained"] == 5
    full = {r["run"] for r in rows if r["variant"] in ("+ L_out", "2 points", "1 layers")}
    assert len(full) == 1
    by_variant = {r["variant"]: r for r in rows}
    one, two = by_variant["1 layers"]["parameters"], by_variant["2 layers"]["parameters"]
    assert two - one == 1_578_752  # one more decoder layer (self-attn, cross-attn, FFN 2048, 3 norms)
    assert by_variant["L_dice"]["config"] == {"alpha": 1.0, "beta": 0.0, "gamma": 0.0, "points_per_object": 2,
                                              "layers": 1}
    for r in rows:
        assert 0.0 <= r["mdsc"] <= 100.0 and r["mdsc_std"] >= 0.0 and r["mhd95"] >= 0.0
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["tables"]["table1"]["methods"] == ["sam2", "run1", "run2", "run3", "run4", "run5"]
    assert summary["info"]["encoder_calls"] == 2  # the two test images, once for all six methods
    table = (out / "ablation.md").read_text()
    assert "| – | SAM2 |" in table and "| layers | 2 layers |" in table
    assert (out / "ablation.png").stat().st_size > 2000
    assert len(list((out / "runs").glob("run*/shift_block.safetensors"))) == 5
