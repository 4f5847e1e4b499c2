"""Pseudo-mask throughput: images per second for N click-only tasks, features cached vs cold.

Each task is one image with one positive click on its object; a pseudo-mask is
``RPSAM2Predictor.segment`` of that click.  Cold: the cache is empty, so every task encodes its
image.  Cached: the same tasks again, the embeddings now in the cache (what a worker that already
served the clicks, or the trainer's feature cache, holds).
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import (
    Row,
    engine,
    fmt_ratio,
    median,
    object_click,
    test_image,
    test_object,
    timed,
    warm_encoder,
)


def tasks(n: int, image: np.ndarray, gt: np.ndarray) -> list[tuple[np.ndarray, tuple[float, float]]]:
    """n distinct images (shifted crops / flips of one photo) with the click of their object."""
    h, w = gt.shape
    ch, cw = int(h * 0.9), int(w * 0.9)
    out = []
    for i in range(n):
        y, x = (i * 7) % (h - ch + 1), (i * 11) % (w - cw + 1)
        img, mask = image[y : y + ch, x : x + cw], gt[y : y + ch, x : x + cw]
        if i % 2:
            img, mask = img[:, ::-1], mask[:, ::-1]
        out.append((np.ascontiguousarray(img), object_click(mask)))
    return out


def run(quick: bool = False, n: int | None = None, image: np.ndarray | None = None,
        gt: np.ndarray | None = None) -> list[Row]:
    from rpsam2_backend.engine.embedding_cache import EmbeddingCache
    from rpsam2_backend.engine.predictor import PixelClick, RPSAM2Predictor

    n = n or (2 if quick else 4)
    image = test_image() if image is None else image
    gt = test_object() if gt is None else gt
    jobs = tasks(n, image, gt)
    predictor = RPSAM2Predictor(engine(), cache=EmbeddingCache(1 << 30))
    warm_encoder()

    def label_all() -> list[bool]:
        return [predictor.segment(img, [PixelClick(*c)], image_key=f"task-{i}").encoded
                for i, (img, c) in enumerate(jobs)]

    cold_s, encoded = timed(label_all)
    cached = [timed(label_all) for _ in range(3)]
    cached_s = median([t for t, _ in cached])
    encoded_again = [e for _, flags in cached for e in flags]
    if not all(encoded) or any(encoded_again):
        raise AssertionError(f"cold pass encoded {encoded}, cached pass encoded {encoded_again}")
    cold_rate, cached_rate = n / cold_s, n / cached_s
    ratio = cached_rate / cold_rate
    return [
        Row(
            f"pseudo-masks, {n} tasks",
            f"cached {cached_rate:.2f} img/s",
            f"cold {cold_rate:.2f} img/s",
            fmt_ratio(ratio),
            "(report)",
            None,
            {"cached_images_per_s": cached_rate, "cold_images_per_s": cold_rate, "ratio": ratio},
        )
    ]
