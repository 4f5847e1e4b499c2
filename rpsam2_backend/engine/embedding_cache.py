"""Image-embedding cache: the whole interactive-latency story (encode ~1 s GPU / 3-17 s CPU,
decode ~10-100 ms).  LRU bounded in bytes, keyed by ``image_key``: the hash of the decoded pixels,
so two URLs (or two encodings) of the same picture share one entry, and the backend and the
trainer's disk-backed feature cache use the same key.  Thread-safe: the inline server and the
worker serve concurrent requests."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from rpsam2_backend.core.contracts import CacheStats
from rpsam2_backend.engine.features import ImageFeatures


def image_key(image: np.ndarray) -> str:
    """sha256 of an image's pixels (shape and dtype included, so a transposed copy differs)."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[str, ImageFeatures] = OrderedDict()
        self._lock = threading.Lock()
        # One lock per key being computed, so concurrent first clicks on one image encode once.
        self._pending: dict[str, threading.Lock] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: str) -> ImageFeatures | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: str, features: ImageFeatures) -> None:
        size = features.nbytes
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key).nbytes
            if size > self.max_bytes:
                return  # larger than the whole budget: caching it would evict everything for nothing
            self._items[key] = features
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.nbytes
                self.evictions += 1

    def get_or_compute(self, key: str, compute: Callable[[], ImageFeatures]) -> tuple[ImageFeatures, bool]:
        """Return (features, computed_now). Concurrent callers for one key compute it once."""
        found = self.get(key)
        if found is not None:
            return found, False
        with self._lock:
            key_lock = self._pending.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                found = self._items.get(key)
                if found is not None:
                    self._items.move_to_end(key)
            if found is not None:
                return found, False
            try:
                features = compute()
                self.put(key, features)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
            return features, True

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return {
                "entries": len(self._items),
                "bytes": self.bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }
