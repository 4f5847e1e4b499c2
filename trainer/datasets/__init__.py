"""Dataset loaders: every format becomes a ``Dataset`` of ``Sample``s with lazily decoded masks.

Formats: ``cataract1k`` (Supervisely JSON + split CSVs), ``cadis`` (label maps, Task II
instruments), ``labelstudio`` (a Label Studio JSON export of brush annotations) and ``folder``
(images/ + masks/NAME__class__k.png).  See each module's docstring for the layout and choices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.datasets.base import Dataset, ObjectMask, Sample
from trainer.datasets.cadis import load_cadis
from trainer.datasets.cataract1k import load_cataract1k
from trainer.datasets.folder import load_folder
from trainer.datasets.labelstudio_export import load_labelstudio_export

__all__ = [
    "FORMATS",
    "Dataset",
    "ObjectMask",
    "Sample",
    "load_cadis",
    "load_cataract1k",
    "load_dataset",
    "load_folder",
    "load_labelstudio_export",
]

FORMATS = ("cataract1k", "cadis", "labelstudio", "folder")


def load_dataset(path: str | Path, fmt: str, split: str | None = None, **options: Any) -> Dataset:
    """Load ``path`` in format ``fmt``; ``options`` go to the format's loader (e.g. ``fold=``,
    ``merge_by_class=`` for cataract1k, ``min_pixels=`` for cadis, ``resolve_image=`` /
    ``root=`` for labelstudio, whose ``path`` is the export file)."""
    if fmt == "cataract1k":
        return load_cataract1k(path, split=split, **options)
    if fmt == "cadis":
        return load_cadis(path, split=split, **options)
    if fmt == "folder":
        return load_folder(path, split=split, **options)
    if fmt == "labelstudio":
        if split is not None:
            raise ValueError("Label Studio exports have no splits; use split=None (or stratified_subset)")
        return load_labelstudio_export(path, **options)
    raise ValueError(f"unknown dataset format {fmt!r}; expected one of: {', '.join(FORMATS)}")
