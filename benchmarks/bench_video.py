"""Video propagation throughput: frames per second SAM2's video predictor tracks one object, against
labelling the same frames one by one as images (encode + one click).

Frames: shifted crops of the test photo (a camera panning a few pixels per frame), the object's
mask on the first one as the seed.  A: frames per second after the seed frame (the steady state:
image encoder + memory attention + decoder + memory encoder per frame, timed between yields).
B: the same frames as independent images: ``SAM2Engine.encode`` and one click decoded, per frame.
The ratio A/B says what tracking costs against the encoder alone; both run on one device
(``--device cuda`` when a GPU is lent), hiera_t, same run.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks import common
from benchmarks.common import Row, engine, fmt_ratio, median, object_click, test_image, test_object


def frames_and_seed(n: int, image: np.ndarray, gt: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    h, w = gt.shape
    ch, cw = int(h * 0.9), int(w * 0.9)
    frames = []
    for i in range(n):
        y, x = min(i * 3, h - ch), min(i * 4, w - cw)
        frames.append(np.ascontiguousarray(image[y : y + ch, x : x + cw]))
    return frames, gt[:ch, :cw]


_VIDEO: dict[str, object] = {}


def video_engine():
    """One random-weight hiera_t video predictor per run and device (config image size, 1024)."""
    if common.DEVICE not in _VIDEO:
        import torch

        from rpsam2_backend.engine.video.tracker import VideoEngine

        torch.manual_seed(0)
        _VIDEO[common.DEVICE] = VideoEngine.build(common.TINY_CONFIG, None, common.DEVICE)
    return _VIDEO[common.DEVICE]


def run(quick: bool = False, n: int | None = None, image: np.ndarray | None = None, gt: np.ndarray | None = None,
        video=None, image_engine=None) -> list[Row]:
    from rpsam2_backend.engine.predictor import PixelClick, RPSAM2Predictor

    n = n or (4 if quick else 10)
    image = test_image() if image is None else image
    gt = test_object() if gt is None else gt
    frames, seed = frames_and_seed(n, image, gt)
    video = video or video_engine()
    image_engine = image_engine or engine()

    stamps = [time.perf_counter()]
    tracked = 0
    for _frame in video.propagate(frames, 0, {"object": seed}, forward=n - 1, min_confidence=0.0):
        stamps.append(time.perf_counter())
        tracked += 1
    if tracked != n - 1:
        raise AssertionError(f"tracked {tracked} of {n - 1} frames")
    steps = np.diff(stamps)
    # The first step also encodes the seed frame and its memory: steady state from the second on.
    propagate_s = median(list(steps[1:])) if len(steps) > 1 else float(steps[0])

    predictor = RPSAM2Predictor(image_engine)
    image_engine.encode(frames[0])  # warm-up
    per_image = []
    for frame in frames[1:]:
        start = time.perf_counter()
        predictor.segment(frame, [PixelClick(*object_click(seed))])
        per_image.append(time.perf_counter() - start)
    image_s = median(per_image)
    video_fps, image_fps = 1.0 / propagate_s, 1.0 / image_s
    ratio = video_fps / image_fps
    size = f"{frames[0].shape[1]}x{frames[0].shape[0]}"
    return [
        Row(
            f"video propagation, hiera_t, {n - 1} frames {size}, 1 object",
            f"tracked {video_fps:.2f} fps",
            f"encode+click {image_fps:.2f} fps",
            fmt_ratio(ratio),
            "(report)",
            None,
            {"propagate_fps": video_fps, "image_fps": image_fps, "ratio": ratio,
             "first_step_s": float(steps[0]), "frames": float(n - 1)},
        )
    ]
