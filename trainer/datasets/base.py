"""The record types every loader returns: ``Sample`` (an image and its objects) and ``Dataset``.

Masks are decoded lazily: an ``ObjectMask`` may hold a zero-argument callable instead of the array,
so a dataset of thousands of 1024x768 frames costs only its annotations in memory.  Calling
``ObjectMask.load()`` decodes (again) each time; cache in the caller if a mask is reused.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import cv2
import numpy as np

from trainer.datasets.stratify import stratified_split

log = logging.getLogger(__name__)

MaskSource = np.ndarray | Callable[[], np.ndarray]
ImageSource = str | Path | np.ndarray


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3); grayscale and alpha are converted."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path} (missing or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An in-memory image (H, W), (H, W, 3) or (H, W, 4), already RGB(A) ordered, as RGB uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[..., :3])
    raise ValueError(f"expected an (H, W[, 3|4]) image, got shape {image.shape}")


@dataclass
class ObjectMask:
    """One object of a sample: its id (unique within the sample), class name and binary mask."""

    object_id: str
    class_name: str
    mask: MaskSource

    def load(self) -> np.ndarray:
        mask = self.mask() if callable(self.mask) else self.mask
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"mask of object {self.object_id!r} must be 2-D, got shape {mask.shape}")
        return mask.astype(bool, copy=False)


@dataclass
class Sample:
    """An image and its (instrument) objects.

    ``sample_id`` is the key splits refer to (defaults to ``image_path``); ``image_loader``, when
    set, replaces reading ``image_path`` from disk (e.g. a Label Studio URL that needs resolving).
    ``meta`` carries loader-specific provenance (video, task id, annotation id, ...).
    """

    image_path: str
    objects: list[ObjectMask]
    sample_id: str = ""
    image_loader: Callable[[], ImageSource] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sample_id:
            self.sample_id = self.image_path

    def load_image(self) -> np.ndarray:
        """The image as RGB uint8 (H, W, 3)."""
        source: ImageSource = self.image_loader() if self.image_loader else self.image_path
        if isinstance(source, np.ndarray):
            return to_rgb_uint8(source)
        return read_rgb(source)

    def class_names(self) -> frozenset[str]:
        return frozenset(obj.class_name for obj in self.objects)


class Dataset(Sequence[Sample]):
    """An ordered list of samples plus named splits (sets of ``sample_id``)."""

    def __init__(
        self,
        samples: Iterable[Sample],
        name: str = "",
        splits: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.samples: list[Sample] = list(samples)
        self.name = name
        self.splits: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in (splits or {}).items()}
        ids = [s.sample_id for s in self.samples]
        if len(set(ids)) != len(ids):
            dupes = sorted(k for k, n in Counter(ids).items() if n > 1)
            raise ValueError(f"duplicate sample ids in dataset {name!r}: {dupes[:5]}")

    def __len__(self) -> int:
        return len(self.samples)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> Dataset: ...

    def __getitem__(self, index: int | slice) -> Sample | Dataset:
        if isinstance(index, slice):
            return self._derived(self.samples[index])
        return self.samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self)} samples, splits={sorted(self.splits)})"

    def _derived(self, samples: Iterable[Sample]) -> Dataset:
        return Dataset(samples, name=self.name, splits=self.splits)

    def classes(self) -> list[str]:
        """Sorted names of the classes that occur in at least one object."""
        return sorted({obj.class_name for s in self.samples for obj in s.objects})

    def class_counts(self) -> dict[str, int]:
        """Objects per class."""
        return dict(sorted(Counter(obj.class_name for s in self.samples for obj in s.objects).items()))

    def split(self, name: str) -> Dataset:
        """The samples of split ``name``, in dataset order."""
        if name not in self.splits:
            known = ", ".join(sorted(self.splits)) or "none"
            raise KeyError(f"dataset {self.name!r} has no split {name!r} (known: {known})")
        members = self.splits[name]
        return self._derived(s for s in self.samples if s.sample_id in members)

    def subset(self, sample_ids: Iterable[str]) -> Dataset:
        wanted = set(sample_ids)
        return self._derived(s for s in self.samples if s.sample_id in wanted)

    def stratified_subset(self, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """(subset with ``round(fraction · len)`` samples, the rest), keeping the class balance.

        Stratified by the set of classes present in each sample (multi-label iterative
        stratification, see ``trainer.datasets.stratify``): each class's share of frames is kept
        close to ``fraction`` in the subset, and a class seen in at least two frames is present
        in both parts whenever the sizes allow.  Deterministic for a given seed; both parts keep
        dataset order.
        """
        in_subset = stratified_split([s.class_names() for s in self.samples], fraction, seed)
        chosen = [s for s, keep in zip(self.samples, in_subset, strict=True) if keep]
        rest = [s for s, keep in zip(self.samples, in_subset, strict=True) if not keep]
        return self._derived(chosen), self._derived(rest)
