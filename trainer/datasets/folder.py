"""A plain folder layout, for data from anywhere else.

::

    ROOT/images/NAME.png | NAME.jpg | NAME.jpeg      the image
    ROOT/masks/NAME__<class name>__<k>.png           one binary mask per object (nonzero = object)
    ROOT/splits/train.txt, val.txt, test.txt, ...    optional: one NAME per line ('#' comments)

``<class name>`` may contain spaces but not ``__``; ``<k>`` tells objects of one class apart
(usually 0, 1, ...); NAME may contain ``__`` (the file name is split from the right).  Object ids
are ``<class name>__<k>``.  Masks are read lazily (any 8-bit image; read as grayscale).

Strict on purpose, since this is our own format: a mask whose NAME has no image, a NAME with two
images, a split listing an unknown NAME, or a requested split without its file is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from trainer.datasets.base import Dataset, ObjectMask, Sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SEPARATOR = "__"


def read_binary_mask(path: str | Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise FileNotFoundError(f"cannot read mask {path}")
    return mask != 0


def mask_file_name(name: str, class_name: str, k: int | str) -> str:
    """The file name this layout expects for object ``k`` of ``class_name`` in image ``name``."""
    if SEPARATOR in class_name or "/" in class_name:
        raise ValueError(f"class name {class_name!r} cannot be stored in a file name of this layout")
    return f"{name}{SEPARATOR}{class_name}{SEPARATOR}{k}.png"


def _loader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: read_binary_mask(path)


def _sort_key(k: str) -> tuple:
    return (0, int(k), "") if k.isdigit() else (1, 0, k)


def read_split_file(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def load_folder(root: str | Path, split: str | None = None) -> Dataset:
    """Samples from ``ROOT/images`` + ``ROOT/masks``; splits from ``ROOT/splits/*.txt``."""
    root = Path(root)
    image_dir, mask_dir, split_dir = root / "images", root / "masks", root / "splits"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"folder dataset needs {image_dir}")

    images: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in images:
            raise ValueError(f"two images named {path.stem!r}: {images[path.stem].name} and {path.name}")
        images[path.stem] = path

    masks: dict[str, list[tuple[str, str, Path]]] = {name: [] for name in images}
    orphans = []
    for path in sorted(mask_dir.glob("*.png")) if mask_dir.is_dir() else []:
        parts = path.stem.rsplit(SEPARATOR, 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"mask {path.name} does not follow NAME__<class name>__<k>.png")
        name, class_name, k = parts
        if name not in images:
            orphans.append(path.name)
            continue
        masks[name].append((class_name, k, path))
    if orphans:
        raise ValueError(f"{len(orphans)} masks in {mask_dir} have no image, e.g. {orphans[:3]}")

    split_files = sorted(split_dir.glob("*.txt")) if split_dir.is_dir() else []
    splits = {p.stem: read_split_file(p) for p in split_files}
    for split_name, names in splits.items():
        unknown = [n for n in names if n not in images]
        if unknown:
            raise ValueError(f"split {split_name!r} lists {len(unknown)} unknown images, e.g. {unknown[:3]}")
    if split is not None and split not in splits:
        expected = split_dir / f"{split}.txt"
        raise FileNotFoundError(f"split {split!r} requested but {expected} does not exist")

    wanted = set(splits[split]) if split is not None else set(images)
    samples = [
        Sample(
            image_path=str(images[name]),
            objects=[
                ObjectMask(f"{class_name}{SEPARATOR}{k}", class_name, _loader(path))
                for class_name, k, path in sorted(masks[name], key=lambda m: (m[0], _sort_key(m[1])))
            ],
            sample_id=name,
        )
        for name in images
        if name in wanted
    ]
    return Dataset(samples, name=f"folder:{root.name}", splits=splits)
