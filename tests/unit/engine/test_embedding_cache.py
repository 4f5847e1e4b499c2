"""The embedding cache: LRU bounded in bytes, one encode per key under concurrency."""

from __future__ import annotations

import torch

from rpsam2_backend.engine.embedding_cache import EmbeddingCache
from rpsam2_backend.engine.features import ImageFeatures


def _features(nbytes_side: int) -> ImageFeatures:
    return ImageFeatures(torch.zeros(1, nbytes_side), [], (1, 1))


def test_cache_is_lru_bounded_in_bytes_and_counts():
    cache = EmbeddingCache(max_bytes=3 * 400)  # three entries of 100 float32
    for key in "abc":
        cache.put(key, _features(100))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", _features(100))
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert cache.bytes == 1200 and cache.evictions == 1
    cache.put("huge", _features(10_000))
    assert "huge" not in cache and len(cache) == 3
    assert cache.stats()["hits"] == 1


def test_cache_computes_once_under_concurrency():
    import threading
    import time

    cache = EmbeddingCache(1 << 20)
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.05)
        return _features(10)

    threads = [threading.Thread(target=cache.get_or_compute, args=("k", compute)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
