"""The masks this process decoded last, so that replaying a click context costs one decode.

Every request of a same-label context carries all of its clicks, and the object rule
(``labelstudio.objects``) decodes each object's mask as it stood before each later click: without
memory the n-th click of an object costs n decodes.  The previous request decoded all of those
prefixes already, and sticky routing sends the image back to this worker, so a small LRU keyed by
(image key, model version, the prompt's clicks) leaves one new decode per click.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from rpsam2_backend.engine.predictor import Segmentation


class DecodedMasks:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Hashable, Segmentation] = OrderedDict()
        self._lock = threading.Lock()  # inline mode runs jobs in the web server's threads

    def get_or_decode(self, key: Hashable, decode: Callable[[], Segmentation]) -> tuple[Segmentation, bool]:
        """(the segmentation, decoded now)."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found, False
        seg = decode()
        if self.capacity > 0:
            with self._lock:
                self._items[key] = seg
                self._items.move_to_end(key)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        return seg, True
