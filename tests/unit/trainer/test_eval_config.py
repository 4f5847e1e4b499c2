"""The knobs of an evaluation: which objects get heatmaps, which tables are computed."""

from __future__ import annotations

import pytest

from trainer.datasets import load_dataset
from trainer.eval.config import EvalConfig, select_heatmaps, table_specs


def test_heatmap_selection_and_table_specs(eval_data_root):
    dataset = load_dataset(eval_data_root, "folder", "test")
    assert select_heatmaps(dataset, 2) == {"img0::forceps__0", "img0::forceps__1"}
    assert select_heatmaps(dataset, ["img1"]) == {"img1::forceps__0", "img1::knife__0"}
    with pytest.raises(ValueError, match="not in the dataset"):
        select_heatmaps(dataset, ["img9::forceps__0"])
    assert [s.n_points for s in table_specs("both")] == [1, 2, 3, 5]
    with pytest.raises(ValueError):
        table_specs("table3")


def test_eval_config_checks_its_knobs_and_freezes_sequences():
    config = EvalConfig(seeds=[3, 1], table2_points=[2], heatmaps=["img1"])
    assert config.seeds == (3, 1) and config.seed_list == [3, 1]
    assert config.table2_points == (2,) and config.heatmaps == ("img1",)
    assert hash(config) == hash(EvalConfig(seeds=(3, 1), table2_points=(2,), heatmaps=("img1",)))
    assert EvalConfig(seeds=2).seed_list == [0, 1]
    assert [s.key for s in EvalConfig(mode="both", table2_points=(2,)).table_specs()] == ["table1", "table2_2pt"]
    assert EvalConfig().grid().target_points == 256
    for bad in ({"seeds": 0}, {"seeds": [1, 1]}, {"mode": "table3"}, {"n_points": 0}, {"table2_points": (0,)}):
        with pytest.raises(ValueError):
            EvalConfig(**bad)
