"""Which object each click of a same-label context belongs to: a stateless rule.

Label Studio's editor sends, with every smart click, *all* keypoints of the same label on the same
image (``getConnectedDynamicRegions``): two instruments of one class, or the leftover clicks of an
object accepted with its own check mark, arrive in one context.  Decoding them together would give
one mask over both objects.  The backend remembers nothing between requests, so the objects are
rebuilt from the clicks alone, replayed in the order Label Studio sends them (creation order, the
newest click last):

* the first positive click starts object 1;
* a later positive click on or near the current mask of an existing object refines that object
  (a missed tip, a cut undone); farther from every current object mask it starts a new object;
* a negative click refines the object whose current mask it is on or near, else the object of the
  previous click; a negative click made before any positive one waits for the next object started
  (it was meant for the object the annotator is about to mark);
* when a click is near several objects' masks, the object of the previous click wins, then the
  most recently touched one.

"Near" is within a margin of the mask (``near_mask``; the job takes it from
RPSAM2_OBJECT_MARGIN_PCT, a share of the image diagonal, so that it scales with the image).
"Current mask" is the mask of the object as decoded from its clicks so far, so a caller supplies
``inside(object_clicks, click)`` (on or near it); the rule itself is pure.  The answer to a request
is the mask of the object that the newest click belongs to: the other objects were answered by
earlier requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# inside(indices of one object's clicks so far, index of the click) -> is the click in its mask?
InsideMask = Callable[[tuple[int, ...], int], bool]


@dataclass(frozen=True)
class ClickObjects:
    objects: tuple[tuple[int, ...], ...]  # click indices of each object, in click order
    owner: tuple[int | None, ...]  # object index of each click; None: a negative with no object yet

    @property
    def newest(self) -> tuple[int, ...] | None:
        """The clicks of the object the newest click belongs to; None when it belongs to none."""
        if not self.owner or self.owner[-1] is None:
            return None
        return self.objects[self.owner[-1]]


def near_mask(mask: np.ndarray, x: float, y: float, radius: float) -> bool:
    """Is a mask pixel's centre within ``radius`` pixels of the point (x, y) (continuous pixel
    coordinates)?  Radius 0: is the pixel under the point in the mask."""
    height, width = mask.shape
    col, row = min(max(int(x), 0), width - 1), min(max(int(y), 0), height - 1)
    if radius <= 0 or mask[row, col]:
        return bool(mask[row, col])
    r = int(np.ceil(radius))
    r0, r1, c0, c1 = max(row - r, 0), min(row + r + 1, height), max(col - r, 0), min(col + r + 1, width)
    rows, cols = np.nonzero(mask[r0:r1, c0:c1])
    if rows.size == 0:
        return False
    d2 = (rows + r0 + 0.5 - y) ** 2 + (cols + c0 + 0.5 - x) ** 2
    return bool(d2.min() <= radius * radius)


def group_clicks(positive: Sequence[bool], inside: InsideMask) -> ClickObjects:
    """Split clicks (given by their polarity, in order) into objects; see the module docstring."""
    objects: list[list[int]] = []
    owner: list[int | None] = []
    waiting: list[int] = []  # negatives made before any object existed
    recent: list[int] = []  # object indices, most recently touched last
    previous: int | None = None
    for k, is_positive in enumerate(positive):
        order = ([previous] if previous is not None else []) + [o for o in reversed(recent) if o != previous]
        hit = next((o for o in order if inside(tuple(objects[o]), k)), None)
        if hit is None and is_positive:
            hit = len(objects)
            objects.append([*waiting, k])
            for w in waiting:
                owner[w] = hit
            waiting = []
        elif hit is None:
            hit = previous
            if hit is None:
                waiting.append(k)
                owner.append(None)
                continue
            objects[hit].append(k)
        else:
            objects[hit].append(k)
        owner.append(hit)
        previous = hit
        if hit in recent:
            recent.remove(hit)
        recent.append(hit)
    return ClickObjects(tuple(tuple(o) for o in objects), tuple(owner))
