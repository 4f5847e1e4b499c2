"""Fixtures the trainer test files share: the evaluation run is computed once per session.

``eval_run`` scores four methods: SAM2; RP-SAM2 with a shift block whose φ is zero (no shift: must
equal SAM2 bit for bit); a block with φ's bias set (a known constant shift); SAM2-FT with a decoder
whose hypernetwork outputs are negated (masks inverted: the swap must show).  Random weights make
the masks meaningless, which is fine: we check the plumbing, not the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.unit.trainer.support_eval import BIAS, SEEDS, inverted_decoder, shift_block, write_dataset
from trainer.datasets import load_dataset
from trainer.eval.config import EvalConfig
from trainer.eval.methods import MethodSpec
from trainer.eval.report import read_scores_csv
from trainer.eval.run import evaluate
from trainer.shift.candidates import GridSpec


@pytest.fixture(scope="session")
def eval_data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaldata")
    write_dataset(root)
    return root


@pytest.fixture(scope="session")
def eval_run(sam2_engine, eval_data_root, tmp_path_factory):
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
    dataset = load_dataset(eval_data_root, "folder", "test")
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
