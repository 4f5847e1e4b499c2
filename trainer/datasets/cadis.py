"""CaDIS (Grammatikopoulos et al., "CaDIS: Cataract dataset for surgical RGB-image segmentation",
Medical Image Analysis 2021), read with the instrument classes of its Task II.

Layout (as distributed)::

    ROOT/Video01/Images/Video1_frame000090.png     RGB frame
    ROOT/Video01/Labels/Video1_frame000090.png     label map, one class id (0-35) per pixel

Sources for the tables below: the class ids 0-35 are CaDIS's own (its README / paper Table 1);
the Task II grouping and the video splits are those of the CaDIS paper as implemented in
``utils/defaults.py`` (``class_remapping_exp2``, ``DATA_SPLITS``) of
RViMLab/MICCAI2021_Cataract_semantic_segmentation (Pissas et al. 2021, same group as CaDIS).
Task II has 17 classes: 4 anatomy (pupil, iris, skin, cornea), 3 others (surgical tape, hand,
eye retractors) and 10 instrument classes, each instrument merged with its handle and similar
instruments merged into one class (cannulas, tissue forceps); 7 rare classes are ignored.

Decisions:
- Only Task II's 10 instrument classes become objects; anatomy, "others" and ignored ids (and
  any id above 35) are neither objects nor errors.
- One object per instrument class present in the frame (all its pixels, connected or not): the
  paper evaluates per class, and CaDIS labels are semantic, not instances.
- ``min_pixels`` drops classes covering fewer pixels (default 1: keep every class present).
- Label maps are read once at load time to know which classes each frame holds (needed for
  stratification); masks are decoded again from the PNG when asked for.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from trainer.datasets.base import Dataset, ObjectMask, Sample

log = logging.getLogger(__name__)

CADIS_CLASSES: dict[int, str] = {
    0: "Pupil",
    1: "Surgical Tape",
    2: "Hand",
    3: "Eye Retractors",
    4: "Iris",
    5: "Skin",
    6: "Cornea",
    7: "Hydrodissection Cannula",
    8: "Viscoelastic Cannula",
    9: "Capsulorhexis Cystotome",
    10: "Rycroft Cannula",
    11: "Bonn Forceps",
    12: "Primary Knife",
    13: "Phacoemulsifier Handpiece",
    14: "Lens Injector",
    15: "I/A Handpiece",
    16: "Secondary Knife",
    17: "Micromanipulator",
    18: "I/A Handpiece Handle",
    19: "Capsulorhexis Forceps",
    20: "Rycroft Cannula Handle",
    21: "Phacoemulsifier Handpiece Handle",
    22: "Capsulorhexis Cystotome Handle",
    23: "Secondary Knife Handle",
    24: "Lens Injector Handle",
    25: "Suture Needle",
    26: "Needle Holder",
    27: "Charleux Cannula",
    28: "Primary Knife Handle",
    29: "Vitrectomy Handpiece",
    30: "Mendez Ring",
    31: "Marker",
    32: "Hydrodissection Cannula Handle",
    33: "Troutman Forceps",
    34: "Cotton",
    35: "Iris Hooks",
}

# Task II instrument classes (Task II ids 7-16, in order) and the CaDIS ids merged into each.
TASK2_INSTRUMENTS: dict[str, tuple[int, ...]] = {
    "Cannula": (7, 8, 10, 20, 27, 32),
    "Capsulorhexis Cystotome": (9, 22),
    "Tissue Forceps": (11, 33),
    "Primary Knife": (12, 28),
    "Phacoemulsifier Handpiece": (13, 21),
    "Lens Injector": (14, 24),
    "I/A Handpiece": (15, 18),
    "Secondary Knife": (16, 23),
    "Micromanipulator": (17,),
    "Capsulorhexis Forceps": (19,),
}
TASK2_ANATOMY_AND_OTHERS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)  # kept by Task II, not instruments
TASK2_IGNORED: tuple[int, ...] = (25, 26, 29, 30, 31, 34, 35)  # too rare: "ignore" in Task II

# Official video split of CaDIS (25 videos; validation 5, 7, 16; test 2, 12, 22).
SPLIT_VIDEOS: dict[str, tuple[int, ...]] = {
    "train": (1, 3, 4, 6, 8, 9, 10, 11, 13, 14, 15, 17, 18, 19, 20, 21, 23, 24, 25),
    "val": (5, 7, 16),
    "test": (2, 12, 22),
}

_NO_CLASS = 255
TASK2_CLASS_NAMES: tuple[str, ...] = tuple(TASK2_INSTRUMENTS)
# Lookup table: CaDIS label id -> index into TASK2_CLASS_NAMES, or _NO_CLASS.
_LUT = np.full(256, _NO_CLASS, dtype=np.uint8)
for _index, _ids in enumerate(TASK2_INSTRUMENTS.values()):
    _LUT[list(_ids)] = _index


def read_label_map(path: str | Path) -> np.ndarray:
    """A CaDIS label PNG as a 2-D uint8 array of class ids."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise FileNotFoundError(f"cannot read CaDIS label map {path}")
    if label.ndim == 3:
        # Some copies are saved as 3 equal channels; anything else is a colour visualisation.
        if not all(np.array_equal(label[..., 0], label[..., c]) for c in range(1, label.shape[2])):
            raise ValueError(f"{path} is a colour image, not a CaDIS label map of class ids")
        label = label[..., 0]
    if label.dtype != np.uint8:
        raise ValueError(f"{path}: expected 8-bit class ids, got {label.dtype}")
    return label


def task2_map(label: np.ndarray) -> np.ndarray:
    """Per-pixel Task II instrument index (0-9), 255 where there is no instrument."""
    return _LUT[label]


def _class_loader(label_path: Path, class_index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return task2_map(read_label_map(label_path)) == class_index

    return load


def video_number(name: str) -> int | None:
    match = re.fullmatch(r"Video0*(\d+)", name)
    return int(match.group(1)) if match else None


def load_cadis(root: str | Path, split: str | None = None, *, min_pixels: int = 1) -> Dataset:
    """CaDIS frames with one object per Task II instrument class present.

    ``split`` is ``"train"``, ``"val"``, ``"test"`` (official video lists) or None (all videos, with
    the three splits attached).  Sample ids are ``VideoNN/NAME``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CaDIS root is not a directory: {root}")
    if split is not None and split not in SPLIT_VIDEOS:
        raise ValueError(f"unknown CaDIS split {split!r}; expected one of {tuple(SPLIT_VIDEOS)} or None")
    videos = {n: d for d in sorted(root.iterdir()) if d.is_dir() and (n := video_number(d.name)) is not None}
    if not videos:
        raise FileNotFoundError(f"no VideoNN folders under {root} (expected ROOT/Video01/Images, Labels)")
    wanted = set(SPLIT_VIDEOS[split]) if split is not None else set(videos)

    samples = []
    for number, video_dir in videos.items():
        if number not in wanted:
            continue
        for label_path in sorted((video_dir / "Labels").glob("*.png")):
            image_path = video_dir / "Images" / label_path.name
            if not image_path.is_file():
                log.warning("CaDIS: label %s has no image %s; skipped", label_path, image_path)
                continue
            counts = np.bincount(task2_map(read_label_map(label_path)).ravel(), minlength=256)
            objects = [
                ObjectMask(name, name, _class_loader(label_path, index))
                for index, name in enumerate(TASK2_CLASS_NAMES)
                if counts[index] >= max(min_pixels, 1)
            ]
            samples.append(
                Sample(
                    image_path=str(image_path),
                    objects=objects,
                    sample_id=f"{video_dir.name}/{label_path.name}",
                    meta={"video": number, "label_path": str(label_path)},
                )
            )
    splits = {
        name: [s.sample_id for s in samples if s.meta["video"] in numbers]
        for name, numbers in SPLIT_VIDEOS.items()
    }
    return Dataset(samples, name=f"cadis:{root.name}", splits=splits)
