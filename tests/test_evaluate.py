"""The evaluation (issue 5) end to end on a tiny folder dataset with a random-weight SAM2 (hiera_t).

One module-scoped run scores four methods: SAM2; RP-SAM2 with a shift block whose φ is zero (no
shift: must equal SAM2 bit for bit); a block with φ's bias set (a known constant shift); SAM2-FT with
a decoder whose hypernetwork outputs are negated (masks inverted: the swap must show).  Random
weights make the masks meaningless, which is fine: we check the plumbing, not the numbers.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rpsam2_backend.engine.sam2_model import save_decoder
from rpsam2_backend.engine.shift_block import ShiftBlock, ShiftBlockConfig
from tests.conftest import TINY_CONFIG
from trainer import cli_eval
from trainer.candidates import GridSpec
from trainer.datasets import load_dataset
from trainer.eval_heatmaps import fill_from_grid
from trainer.eval_report import read_scores_csv
from trainer.evaluate import EvalConfig, MethodSpec, evaluate, object_key, select_heatmaps, table_specs
from trainer.metrics import EMPTY_HD95_POLICY
from trainer.protocol import AVG_ROW, WEIGHTED_AVG_ROW, ObjectScore, aggregate, points_for_protocol

H, W = 120, 160
SEEDS = 2
BIAS = (2.0, -1.0)  # φ bias of the "moved" block: a constant shift of σ(s)·tanh(bias) of the side


def _shapes() -> dict[str, dict[tuple[str, int], np.ndarray]]:
    yy, xx = np.mgrid[0:H, 0:W]
    disc = ((yy - 40) ** 2 + (xx - 50) ** 2) <= 15**2
    bar = (yy >= 70) & (yy < 100) & (xx >= 90) & (xx < 140)
    small = ((yy - 30) ** 2 + (xx - 125) ** 2) <= 9**2
    ring = (((yy - 80) ** 2 + (xx - 40) ** 2) <= 20**2) & (((yy - 80) ** 2 + (xx - 40) ** 2) > 8**2)
    return {
        "img0": {("forceps", 0): disc, ("forceps", 1): small, ("knife", 0): bar},
        "img1": {("forceps", 0): ring, ("knife", 0): bar & (xx < 120)},
    }


def write_dataset(root: Path) -> dict[str, dict[tuple[str, int], np.ndarray]]:
    shapes = _shapes()
    rng = np.random.default_rng(0)
    for d in ("images", "masks", "splits"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, objects in shapes.items():
        image = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
        for k, ((_, _), mask) in enumerate(objects.items()):
            image[mask] = ((200, 60, 60), (60, 200, 60), (60, 60, 220))[k]
        assert cv2.imwrite(str(root / "images" / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        for (cls, k), mask in objects.items():
            assert cv2.imwrite(str(root / "masks" / f"{name}__{cls}__{k}.png"), mask.astype(np.uint8) * 255)
    (root / "splits" / "test.txt").write_text("img0\nimg1\n")
    (root / "splits" / "one.txt").write_text("img1\n")
    (root / "splits" / "empty.txt").write_text("# nothing here\n")
    return shapes


def shift_block(bias: tuple[float, float] | None) -> ShiftBlock:
    torch.manual_seed(1)
    block = ShiftBlock(ShiftBlockConfig(layers=1))  # one layer keeps the CPU test quick
    with torch.no_grad():
        block.phi.weight.zero_()
        block.phi.bias.copy_(torch.tensor(bias or (0.0, 0.0)))
    return block


def inverted_decoder(engine, directory: Path) -> Path:
    """A 'fine-tuned' decoder that predicts the complement of SAM2's masks (hypernetwork negated)."""
    decoder = copy.deepcopy(engine.model.sam_mask_decoder)
    with torch.no_grad():
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.neg_()
            mlp.layers[-1].bias.neg_()
    return save_decoder(decoder, directory)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaldata")
    write_dataset(root)
    return root


@pytest.fixture(scope="module")
def run(sam2_engine, data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalout")
    decoder_dir = inverted_decoder(sam2_engine, tmp_path_factory.mktemp("sam2ft"))
    before = {k: v.clone() for k, v in sam2_engine.model.sam_mask_decoder.state_dict().items()}
    moved = shift_block(BIAS)
    methods = {
        "sam2": MethodSpec.sam2(),
        "rpsam2": MethodSpec.rpsam2(shift_block(None)),
        "moved": MethodSpec("Moved", shift_block=moved),
        "sam2ft": MethodSpec.sam2ft(decoder_dir),
    }
    dataset = load_dataset(data_root, "folder", "test")
    encodes = sam2_engine.encode_count
    config = EvalConfig(seeds=SEEDS, mode="both", table2_points=(2,), heatmaps=1,
                        heatmap_grid=GridSpec(target_points=6, min_points=4), batch_size=64, progress=False)
    result = evaluate(dataset, sam2_engine, methods, config, out)
    after = sam2_engine.model.sam_mask_decoder.state_dict()
    return {
        "result": result,
        "encodes": sam2_engine.encode_count - encodes,
        "decoder_restored": all(torch.equal(before[k], after[k]) for k in before),
        "dataset": dataset,
        "moved": moved,
        "csv": read_scores_csv(out / "scores.csv"),
        "summary": json.loads((out / "summary.json").read_text()),
    }


def rows_by(rows, *fields):
    out = defaultdict(list)
    for r in rows:
        out[tuple(r[f] for f in fields)].append(r)
    return out


# ------------------------------------------------------------------------------------------ protocol


def test_encoder_runs_once_per_image_for_all_methods_seeds_and_tables(run):
    assert run["encodes"] == 2
    assert run["result"].info["encoder_calls"] == 2
    # 5 objects x 2 seeds x 4 methods x 2 tables (1 point, 2 points), all scored from those 2 encodes
    assert len(run["csv"]) == 5 * SEEDS * 4 * 2


def test_every_method_gets_the_same_protocol_points(run, data_root):
    shapes = _shapes()
    groups = rows_by(run["csv"], "table", "seed", "sample_id", "object_id")
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


def test_aggregation_is_per_seed_then_across_seeds(run):
    summary = run["summary"]
    for table_key in ("table1", "table2_2pt"):
        rows = [r for r in run["csv"] if r["table"] == table_key]
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
                assert cell["std"] == pytest.approx(np.std(per_seed), abs=1e-12)
                # Avg. = per seed the plain mean of the two class means
                plain = [np.mean([np.mean([r[metric] for r in rows if r["method"] == method and r["seed"] == s
                                           and r["class_name"] == c]) for c in ("forceps", "knife")])
                         for s in range(SEEDS)]
                assert cells[(method, AVG_ROW, metric)]["mean"] == pytest.approx(np.mean(plain), abs=1e-12)
                assert cells[(method, AVG_ROW, metric)]["std"] == pytest.approx(np.std(plain), abs=1e-12)


# ------------------------------------------------------------------------------------------ methods


def test_zero_shift_block_is_exactly_sam2_and_the_test_says_no_difference(run):
    by_key = rows_by(run["csv"], "table", "seed", "sample_id", "object_id")
    for rows in by_key.values():
        m = {r["method"]: r for r in rows}
        assert m["rpsam2"]["dice"] == m["sam2"]["dice"]
        assert m["rpsam2"]["hd95"] == m["sam2"]["hd95"]
        assert m["rpsam2"]["first_used"] == m["rpsam2"]["points"][0]
    for tests in run["summary"]["paired_tests"].values():
        for t in tests:
            if t["method"] == "rpsam2":
                assert t["p_value"] == 1.0 and t["note"] == "no difference"
                assert t["test"] == "Wilcoxon signed-rank"
    heat = run["result"].heatmaps[0]
    np.testing.assert_array_equal(heat.dice["rpsam2"], heat.dice["sam2"])


def test_shift_block_moves_the_first_point_by_its_displacement(run):
    block = run["moved"]
    with torch.no_grad():
        step = (torch.sigmoid(block.scale_logit) * torch.tanh(block.phi.bias)).double().numpy()
    rows = [r for r in run["csv"] if r["method"] == "moved"]
    for r in rows:
        x, y = r["points"][0]
        expected = np.clip(np.array([x / W, y / H]) + step, 0.0, 1.0) * np.array([W, H])
        np.testing.assert_allclose(r["first_used"], expected, atol=1e-3)
    assert any(not r["first_inside_gt"] for r in rows)  # shifts of 15 px leave the small objects
    outcomes = run["summary"]["outcomes"]["table1"]
    assert outcomes["moved"]["first_outside"] == sum(not r["first_inside_gt"] for r in rows
                                                     if r["table"] == "table1")
    assert outcomes["sam2"]["first_outside"] == 0


def test_sam2ft_decoder_is_used_and_swapped_back(run):
    assert run["decoder_restored"]
    by_key = rows_by(run["csv"], "table", "seed", "sample_id", "object_id")
    assert any({r["method"]: r["dice"] for r in rows}["sam2ft"] != {r["method"]: r["dice"] for r in rows}["sam2"]
               for rows in by_key.values())


# ------------------------------------------------------------------------------------------ outputs


def test_report_csv_json_and_heatmaps_are_written(run):
    result = run["result"]
    report = result.report_path.read_text()
    for text in ("±", "forceps", "knife", "Table 1", "Table 2", "W. Avg.", "Wilcoxon signed-rank",
                 "SAM2-FT", "RP-SAM2", EMPTY_HD95_POLICY, "RANDOM WEIGHTS", "no difference", TINY_CONFIG):
        assert text in report, text
    assert result.scores_path.stat().st_size > 0
    summary = run["summary"]
    assert summary["info"]["seeds"] == list(range(SEEDS))
    assert set(summary["tables"]) == {"table1", "table2_2pt"}
    assert summary["hd95_empty_policy"] == EMPTY_HD95_POLICY

    assert len(result.heatmaps) == 1
    heat = result.heatmaps[0]
    first = run["dataset"][0]
    assert heat.key == object_key(first.sample_id, first.objects[0].object_id)
    png = Path(heat.png)
    assert png.is_file() and png.stat().st_size > 0
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 50 and image.shape[1] > 200
    assert f"]({png.relative_to(result.out_dir).as_posix()})" in report
    assert summary["heatmaps"][0]["grid_points"] == len(heat.grid) >= 4
    assert set(heat.dice) == {"sam2", "rpsam2", "moved", "sam2ft"}


def test_heatmap_fill_takes_the_nearest_grid_value():
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:8, 2:18] = True
    grid = np.array([[4.5, 5.5], [15.5, 5.5]])  # (x, y) pixel centres
    filled = fill_from_grid(mask, grid, np.array([0.2, 0.9]))
    assert np.isnan(filled[0, 0]) and np.isnan(filled[9, 19])
    assert filled[5, 3] == 0.2 and filled[3, 8] == 0.2
    assert filled[5, 16] == 0.9 and filled[7, 12] == 0.9


def test_heatmap_selection_and_table_specs(data_root):
    dataset = load_dataset(data_root, "folder", "test")
    assert select_heatmaps(dataset, 2) == {"img0::forceps__0", "img0::forceps__1"}
    assert select_heatmaps(dataset, ["img1"]) == {"img1::forceps__0", "img1::knife__0"}
    with pytest.raises(ValueError, match="not in the dataset"):
        select_heatmaps(dataset, ["img9::forceps__0"])
    assert [s.n_points for s in table_specs("both")] == [1, 2, 3, 5]
    with pytest.raises(ValueError):
        table_specs("table3")


# ------------------------------------------------------------------------------------------ CLI


def test_cli_runs_end_to_end(data_root, tmp_path, capsys):
    ckpt = shift_block(None).save(tmp_path / "shift")
    out = tmp_path / "out"
    rc = cli_eval.main([
        "--data", str(data_root), "--format", "folder", "--split", "one", "--methods", "sam2,rpsam2",
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
def test_cli_bad_input_exits_2_with_a_message(args, message, data_root, tmp_path, capsys):
    base = {"--data": str(data_root), "--format": "folder", "--split": "test", "--methods": "sam2",
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
