"""Cataract-1K instrument segmentation (Ghamsarian et al. 2024), Supervisely layout.

Layout::

    ROOT/case_5013/img/case5013_01.png
    ROOT/case_5013/ann/case5013_01.png.json
    ROOT/TrainIDs_SemanticSegmentation_FiveFold/TrainIDs_Cataract_1k_Instruments/
        Cat1k_instrument_{fold}_{train,test}.csv      (columns ``imgs,masks``)

Annotations are Supervisely JSON: ``size: {height, width}`` and ``objects[]`` with ``classTitle``,
``geometryType`` and either ``points: {exterior: [[x, y], ...], interior: [[[x, y], ...], ...]}``
(polygon) or ``bitmap: {data, origin: [x, y]}`` (base64 of a zlib-compressed PNG whose alpha, or
value, is the mask; ``origin`` is its top-left corner in the image).

Decisions:
- Only the 10 instrument classes are kept (titles compared case-insensitively and returned in the
  canonical spelling below); anatomy (cornea, pupil, lens, ...) and anything else is dropped.
- Polygons are rasterised like Supervisely does: ``cv2.fillPoly`` of the exterior with 1, then of
  every hole with 0 (coordinates rounded to whole pixels).
- ``merge_by_class=True`` (default): all objects of one class in a frame form one object, as the
  dataset's semantic-segmentation masks and the paper's per-class evaluation treat them (an
  instrument cut in two by an occluder stays one object).  ``False`` keeps Supervisely objects.
- Split CSVs hold absolute paths from the authors' machine; rows are matched on their
  ``case_XXXX/img/NAME`` suffix.  Rows whose frame is not under ROOT are logged and skipped.
- Frames without an annotation file are skipped (unlabelled); a frame whose annotation has no
  instrument is kept with no objects (a real "no instrument" frame).
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from trainer.datasets.base import Dataset, ObjectMask, Sample

log = logging.getLogger(__name__)

INSTRUMENT_CLASSES: tuple[str, ...] = (
    "Slit Knife",
    "Gauge",
    "Capsulorhexis Cystotome",
    "Spatula",
    "Phacoemulsification Tip",
    "Irrigation-Aspiration",
    "Lens Injector",
    "Incision Knife",
    "Katena Forceps",
    "Capsulorhexis Forceps",
)
# The paper's table abbreviations (Table 1).
CLASS_ABBREVIATIONS: dict[str, str] = {
    "Capsulorhexis Cystotome": "CC",
    "Capsulorhexis Forceps": "CF",
    "Gauge": "G",
    "Irrigation-Aspiration": "IA",
    "Incision Knife": "IK",
    "Katena Forceps": "KF",
    "Lens Injector": "LI",
    "Phacoemulsification Tip": "PhT",
    "Slit Knife": "SK",
    "Spatula": "S",
}
SPLITS_SUBDIR = Path("TrainIDs_SemanticSegmentation_FiveFold") / "TrainIDs_Cataract_1k_Instruments"
SPLIT_NAMES = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_CANONICAL = {title.casefold(): title for title in INSTRUMENT_CLASSES}


def split_csv_path(root: str | Path, split: str, fold: int = 0, splits_dir: str | Path | None = None) -> Path:
    """Where the CSV of ``split`` for ``fold`` is expected."""
    base = Path(splits_dir) if splits_dir is not None else Path(root) / SPLITS_SUBDIR
    return base / f"Cat1k_instrument_{fold}_{split}.csv"


def frame_key(path: str) -> str | None:
    """``case_XXXX/img/NAME`` from any path (POSIX or Windows) holding it, else None."""
    parts = [p for p in re.split(r"[\\/]+", path.strip()) if p]
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "img":
            return f"{parts[i - 1]}/img/{parts[i + 1]}"
    return None


def read_split_keys(csv_path: Path) -> list[str]:
    """Frame keys listed in a split CSV (column ``imgs``), in file order."""
    if not csv_path.is_file():
        raise FileNotFoundError(f"Cataract-1K split file not found: {csv_path}")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "imgs" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: expected a header with column 'imgs', got {reader.fieldnames}")
        keys = []
        for line, row in enumerate(reader, start=2):
            key = frame_key(row["imgs"] or "")
            if key is None:
                raise ValueError(f"{csv_path}:{line}: no case_XXXX/img/NAME in {row['imgs']!r}")
            keys.append(key)
    return keys


def _decode_bitmap(bitmap: dict, height: int, width: int) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(bitmap["data"]))
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("Supervisely bitmap does not hold a decodable PNG")
    if image.ndim == 3:
        patch = image[..., 3] if image.shape[2] == 4 else image.max(axis=2)
    else:
        patch = image
    x0, y0 = (int(v) for v in bitmap["origin"])
    mask = np.zeros((height, width), dtype=bool)
    # Clip the patch to the frame: annotation tools may let a bitmap stick out of the image.
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + patch.shape[0], height), min(x0 + patch.shape[1], width)
    if ye > ys and xe > xs:
        mask[ys:ye, xs:xe] = patch[ys - y0 : ye - y0, xs - x0 : xe - x0] != 0
    return mask


def _rasterise_polygon(points: dict, height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), dtype=np.uint8)
    exterior = np.round(np.asarray(points["exterior"], dtype=np.float64)).astype(np.int32)
    if exterior.ndim != 2 or exterior.shape[1] != 2 or len(exterior) == 0:
        raise ValueError(f"polygon exterior must be a list of [x, y], got shape {exterior.shape}")
    cv2.fillPoly(canvas, [exterior], 1)
    for hole in points.get("interior") or []:
        hole = np.round(np.asarray(hole, dtype=np.float64)).astype(np.int32)
        if len(hole):
            cv2.fillPoly(canvas, [hole], 0)
    return canvas.astype(bool)


def object_mask(obj: dict, height: int, width: int) -> np.ndarray:
    """Decode one Supervisely object (polygon or bitmap) to a bool (height, width) mask."""
    kind = obj.get("geometryType")
    if kind == "polygon":
        return _rasterise_polygon(obj["points"], height, width)
    if kind == "bitmap":
        return _decode_bitmap(obj["bitmap"], height, width)
    raise ValueError(f"unsupported Supervisely geometryType {kind!r}")


def _mask_loader(objects: list[dict], height: int, width: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        mask = np.zeros((height, width), dtype=bool)
        for obj in objects:
            mask |= object_mask(obj, height, width)
        return mask

    return load


def parse_annotation(ann: dict, merge_by_class: bool = True) -> list[ObjectMask]:
    """Instrument objects of one Supervisely annotation (masks decoded lazily)."""
    height, width = int(ann["size"]["height"]), int(ann["size"]["width"])
    kept: dict[str, list[tuple[str, dict]]] = {}
    for index, obj in enumerate(ann.get("objects", [])):
        title = _CANONICAL.get(str(obj.get("classTitle", "")).strip().casefold())
        if title is None:
            continue
        if obj.get("geometryType") not in ("polygon", "bitmap"):
            log.warning("skipping %s object with geometry %r", title, obj.get("geometryType"))
            continue
        kept.setdefault(title, []).append((str(obj.get("id", index)), obj))
    objects = []
    for title, items in kept.items():
        if merge_by_class:
            objects.append(ObjectMask(title, title, _mask_loader([o for _, o in items], height, width)))
        else:
            objects.extend(
                ObjectMask(f"{title}#{oid}", title, _mask_loader([o], height, width)) for oid, o in items
            )
    return objects


def _frames(root: Path) -> dict[str, tuple[Path, Path]]:
    """key -> (image, annotation) for every annotated frame under root, sorted by key."""
    frames = {}
    unannotated = 0
    for image in sorted(root.glob("case_*/img/*")):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        ann = image.parent.parent / "ann" / f"{image.name}.json"
        if not ann.is_file():
            unannotated += 1
            continue
        frames[f"{image.parent.parent.name}/img/{image.name}"] = (image, ann)
    if unannotated:
        log.warning("Cataract-1K: %d frames under %s have no annotation file; skipped", unannotated, root)
    return frames


def load_cataract1k(
    root: str | Path,
    split: str | None = None,
    fold: int = 0,
    *,
    merge_by_class: bool = True,
    splits_dir: str | Path | None = None,
) -> Dataset:
    """Cataract-1K frames with their instrument objects.

    ``split=None`` loads every annotated frame and attaches the fold's ``train``/``test`` splits
    when its CSVs exist; ``"train"`` / ``"test"`` loads only that split (its CSV must exist).
    Sample ids are the ``case_XXXX/img/NAME`` keys.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Cataract-1K root is not a directory: {root}")
    if split is not None and split not in SPLIT_NAMES:
        raise ValueError(f"unknown Cataract-1K split {split!r}; expected one of {SPLIT_NAMES} or None")
    frames = _frames(root)

    splits: dict[str, list[str]] = {}
    for name in SPLIT_NAMES if split is None else (split,):
        path = split_csv_path(root, name, fold, splits_dir)
        if split is None and not path.is_file():
            continue
        keys = read_split_keys(path)
        missing = [k for k in keys if k not in frames]
        if missing:
            log.warning("%s: %d of %d frames not found under %s (e.g. %s); skipped",
                        path.name, len(missing), len(keys), root, missing[0])
        splits[name] = [k for k in keys if k in frames]

    members = set(splits[split]) if split is not None else frames.keys()
    wanted = [k for k in frames if k in members]
    samples = []
    for key in wanted:
        image, ann_path = frames[key]
        ann = json.loads(ann_path.read_text())
        samples.append(
            Sample(
                image_path=str(image),
                objects=parse_annotation(ann, merge_by_class=merge_by_class),
                sample_id=key,
                meta={"case": key.split("/", 1)[0], "annotation": str(ann_path)},
            )
        )
    return Dataset(samples, name=f"cataract1k:{root.name}", splits=splits)
