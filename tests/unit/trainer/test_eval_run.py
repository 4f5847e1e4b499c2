"""``evaluate`` (issue 5) end to end on a tiny folder dataset with a random-weight SAM2 (hiera_t): one encode
per image, the same protocol points for every method, per-seed-first aggregation.

One session-scoped run (``eval_run`` in this folder's conftest) scores four methods: SAM2; RP-SAM2 with a
shift block whose φ is zero (no shift: must equal SAM2 bit for bit); a block with φ's bias set (a known
constant shift); SAM2-FT with a decoder whose hypernetwork outputs are negated (masks inverted: the swap
must show).  Random weights make the masks meaningless, which is fine: we check the plumbing, not the
numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.trainer.support_eval import SEEDS, eval_shapes, rows_by
from trainer.eval.protocol import AVG_ROW, WEIGHTED_AVG_ROW, ObjectScore, aggregate
from trainer.prompts import points_for_protocol


def test_encoder_runs_once_per_image_for_all_methods_seeds_and_tables(eval_run):
    assert eval_run["encodes"] == 2
    assert eval_run["result"].info["encoder_calls"] == 2
    # 5 objects x 2 seeds x 4 methods x 2 tables (1 point, 2 points), all scored from those 2 encodes
    assert len(eval_run["csv"]) == 5 * SEEDS * 4 * 2


def test_every_method_gets_the_same_protocol_points(eval_run, eval_data_root):
    shapes = eval_shapes()
    groups = rows_by(eval_run["csv"], "table", "seed", "sample_id", "object_id")
    assert len(groups) == 5 * SEEDS * 2
    for (table, seed, sample_id, object_id), rows in groups.items():
        assert sorted(r["method"] for r in rows) == ["moved", "rpsam2", "sam2", "sam2ft"]
        assert all(r["points"] == rows[0]["points"] for r in rows)
        # the protocol's own points for this object id, as pixel centres
        cls, k = object_id.split("__")
        mask = shapes[sample_id][(cls, int(k))]
        n = 1 if table == "table1" else 2
        expected = points_for_protocol([((sample_id, object_id), mask)], [seed], n)[seed][(sample_id, object_id)]
        np.testing.assert_array_equal(np.array(rows[0]["points"]), expected + 0.5)
        cols, rws = (np.array(rows[0]["points"]) - 0.5).astype(int).T
        assert mask[rws, cols].all()
    # different seeds prompt differently
    first = {key: rows[0]["points"] for key, rows in groups.items() if key[0] == "table1"}
    assert any(first[("table1", 0, s, o)] != first[("table1", 1, s, o)] for (_, _, s, o) in first)


def test_aggregation_is_per_seed_then_across_seeds(eval_run):
    summary = eval_run["summary"]
    for table_key in ("table1", "table2_2pt"):
        rows = [r for r in eval_run["csv"] if r["table"] == table_key]
        scores = [ObjectScore(r["method"], r["seed"], (r["sample_id"], r["object_id"]), r["class_name"],
                              r["dice"], r["hd95"]) for r in rows]
        table = aggregate(scores, ["forceps", "knife"])
        cells = {(c["method"], c["row"], c["metric"]): c for c in summary["tables"][table_key]["cells"]}
        assert len(cells) == len(table.cells) == 4 * 4 * 2
        for key, cell in table.cells.items():
            assert cells[key]["mean"] == pytest.approx(cell.mean, abs=1e-12)
            assert cells[key]["std"] == pytest.approx(cell.std, abs=1e-12)

        # independent of protocol.aggregate: W. Avg. = per seed the mean over all objects, then mean/std
        for method in ("sam2", "moved", "sam2ft"):
            for metric in ("dice", "hd95"):
                per_seed = [np.mean([r[metric] for r in rows if r["method"] == method and r["seed"] == s])
                            for s in range(SEEDS)]
                cell = cells[(method, WEIGHTED_AVG_ROW, metric)]
                assert cell["mean"] == pytest.approx(np.mean(per_seed), abs=1e-12)
                assert cell["std_of_mean"] == pytest.approx(np.std(per_seed), abs=1e-12)
                # the paper's W. Avg. ±: the class stds weighted by objects per class (forceps 3, knife 2)
                class_std = {c: np.std([np.mean([r[metric] for r in rows if r["method"] == method
                                                 and r["seed"] == s and r["class_name"] == c])
                                        for s in range(SEEDS)]) for c in ("forceps", "knife")}
                n = {c: len({r["object_id"] + r["sample_id"] for r in rows if r["class_name"] == c})
                     for c in ("forceps", "knife")}
                assert n == {"forceps": 3, "knife": 2}
                weighted_std = (3 * class_std["forceps"] + 2 * class_std["knife"]) / 5
                assert cell["std"] == pytest.approx(weighted_std, abs=1e-12)
                # Avg. = per seed the plain mean of the two class means; ± the plain mean of the class stds
                plain = [np.mean([np.mean([r[metric] for r in rows if r["method"] == method and r["seed"] == s
                                           and r["class_name"] == c]) for c in ("forceps", "knife")])
                         for s in range(SEEDS)]
                assert cells[(method, AVG_ROW, metric)]["mean"] == pytest.approx(np.mean(plain), abs=1e-12)
                assert cells[(method, AVG_ROW, metric)]["std"] == pytest.approx(
                    (class_std["forceps"] + class_std["knife"]) / 2, abs=1e-12)
                assert cells[(method, AVG_ROW, metric)]["std_of_mean"] == pytest.approx(np.std(plain), abs=1e-12)
