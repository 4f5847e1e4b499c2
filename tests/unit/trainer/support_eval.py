"""The evaluation tests' tiny folder dataset (known shapes), shift blocks with a known shift, an inverted decoder."""

from __future__ import annotations

import copy
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

from rpsam2_backend.engine.decoder_weights import save_decoder
from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig

H, W = 120, 160
SEEDS = 2
BIAS = (2.0, -1.0)  # φ bias of the "moved" block: a constant shift of σ(s)·tanh(bias) of the side


def eval_shapes() -> dict[str, dict[tuple[str, int], np.ndarray]]:
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
    shapes = eval_shapes()
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


def rows_by(rows, *fields):
    out = defaultdict(list)
    for r in rows:
        out[tuple(r[f] for f in fields)].append(r)
    return out
