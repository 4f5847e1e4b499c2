"""Candidate generation: Dice of every grid point on one object, batched decoder vs a predictor loop.

Side A is what a user of SAM2 would write: ``SAM2ImagePredictor.predict`` once per grid point
(best of the three masks by predicted IoU, as SAM2 does for one click).  Side B is
``trainer.shift.candidates.grid_dice``: all points through one batched decoder call per chunk.  Both get
the same image features (the predictor's ``set_image`` state is filled with the engine's
features, so no second encode and bit-identical inputs) and the same points; the benchmark
asserts they produce the same Dice per point before it trusts either timing.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks import common
from benchmarks.common import (
    Row,
    engine,
    flop_count,
    fmt_ratio,
    fmt_s,
    median,
    test_features,
    test_object,
    timed,
)

TARGET = 8.0
DICE_TOLERANCE = 1e-3  # coords are scaled by (1024/W) here and (x/W)*1024 in SAM2: rare edge pixels


def sam2_predictor(eng, features):
    """SAM2's own predictor holding ``features`` exactly as ``set_image`` would leave it."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(eng.model)
    pred._features = {"image_embed": features.image_embed, "high_res_feats": list(features.high_res_feats)}
    pred._orig_hw = [tuple(features.orig_hw)]
    pred._is_image_set = True
    pred._is_batch = False
    return pred


def loop_dice(eng, pred, points: np.ndarray, gt: np.ndarray) -> np.ndarray:
    gt_flat = gt.reshape(-1)
    out = np.empty(len(points))
    # SAM2 adds half a pixel to what it is given; our grid points are continuous already.
    points = eng.sam2_predictor_coords(points, gt.shape)
    for i, (x, y) in enumerate(points):
        masks, scores, _ = pred.predict(
            point_coords=np.array([[x, y]], dtype=np.float32), point_labels=np.array([1]), multimask_output=True
        )
        m = masks[int(np.argmax(scores))].reshape(-1) > 0.5
        inter = int((m & gt_flat).sum())
        out[i] = 2.0 * inter / (int(m.sum()) + int(gt_flat.sum()))
    return out


def profile_batched(eng, features, points: np.ndarray, gt: np.ndarray, rows: int = 10) -> str:
    """torch.profiler table (self CPU time) of one batched chunk: where the decoder's time goes."""
    from torch.profiler import ProfilerActivity, profile

    from trainer.shift.candidates import grid_dice

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        grid_dice(eng, features, points, gt, chunk_size=len(points))
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)


def run(
    quick: bool = False,
    reps: int | None = None,
    target_points: int = 64,
    image: np.ndarray | None = None,
    gt: np.ndarray | None = None,
    features=None,
    chunk_size: int = 64,
    profile: bool = True,
) -> list[Row]:
    from trainer.shift.candidates import GridSpec, grid_dice, grid_points

    eng = engine()
    if features is None:
        features = test_features() if image is None else eng.encode(image)
    gt = test_object() if gt is None else gt
    points = grid_points(gt, GridSpec(target_points=target_points))
    # One pass each on the CPU: a pass is K decoder calls already, and three would not fit the run's
    # budget.  A GPU pass takes milliseconds, so there the median of five.
    reps = reps or (1 if common.DEVICE == "cpu" else 5)
    pred = sam2_predictor(eng, features)

    warm = points[: min(4, len(points))]
    loop_dice(eng, pred, warm, gt)
    grid_dice(eng, features, warm, gt, chunk_size=chunk_size)
    loop_s, batch_s = [], []
    for _ in range(reps):  # interleaved, so a load spike from the neighbours hits both sides
        t, looped = timed(lambda: loop_dice(eng, pred, points, gt))
        loop_s.append(t)
        t, batched = timed(lambda: grid_dice(eng, features, points, gt, chunk_size=chunk_size))
        batch_s.append(t)
    worst = float(np.abs(looped - batched).max())
    if worst > DICE_TOLERANCE:
        raise AssertionError(f"batched and looped Dice differ by up to {worst:.4f} (> {DICE_TOLERANCE})")
    a, b = median(loop_s), median(batch_s)
    ratio = a / b
    # Both sides run the decoder once per point: the same arithmetic, so a compute-bound device
    # can only gain what the loop spends around it (per-call work, launches, small matrices).
    flop_ratio = flop_count(lambda: loop_dice(eng, pred, points, gt)) / flop_count(
        lambda: grid_dice(eng, features, points, gt, chunk_size=chunk_size))
    row = Row(
        f"candidates, {len(points)}-point grid Dice",
        f"predict() loop {fmt_s(a)}",
        f"batched {fmt_s(b)}",
        f"{fmt_ratio(ratio)} (FLOPs {fmt_ratio(flop_ratio)})",
        f">= {TARGET:g}x",
        ratio >= TARGET,
        {"loop_s": a, "batched_s": b, "ratio": ratio, "points": float(len(points)),
         "loop_per_point_s": a / len(points), "batched_per_point_s": b / len(points),
         "max_dice_difference": worst, "torch_threads": float(torch.get_num_threads()), "flop_ratio": flop_ratio},
    )
    if profile:
        row.notes.append(profile_batched(eng, features, points[: min(16, len(points))], gt))
    return [row]
