"""Cataract-1K (Supervisely polygons and bitmaps, fold CSVs):
checked pixel by pixel on a small fixture written in the real format."""

from __future__ import annotations

import base64
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.unit.trainer.support_datasets import H, W, box, masks_by_id, write_rgb
from trainer.datasets import load_dataset
from trainer.datasets.cataract1k import CLASS_ABBREVIATIONS, INSTRUMENT_CLASSES, frame_key


def rect(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def supervisely_bitmap(patch: np.ndarray) -> str:
    """Supervisely's own encoder: palette PNG with transparent 0, zlib, base64."""
    image = Image.fromarray(patch.astype(np.uint8))
    image.putpalette([0, 0, 0, 255, 255, 255])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0, optimize=0)
    return base64.b64encode(zlib.compress(buffer.getvalue())).decode()


BITMAP_PATCH = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=np.uint8)


def polygon(title: str, exterior, interior=(), object_id: int | None = None) -> dict:
    points = {"exterior": exterior, "interior": list(interior)}
    obj = {"classTitle": title, "geometryType": "polygon", "points": points}
    if object_id is not None:
        obj["id"] = object_id
    return obj


def write_ann(path: Path, objects: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ann = {"description": "", "tags": [], "size": {"height": H, "width": W}, "objects": objects}
    path.write_text(json.dumps(ann))


@pytest.fixture()
def cataract_root(tmp_path: Path) -> Path:
    root = tmp_path / "Cataract-1K"
    write_rgb(root / "case_5013/img/case5013_01.png", seed=1)
    write_ann(
        root / "case_5013/ann/case5013_01.png.json",
        [
            # Spatula: rectangle x 5..20, y 4..15 with a hole x 9..13, y 7..10
            polygon("Spatula", rect(5, 4, 20, 15), [rect(9, 7, 13, 10)], object_id=101),
            polygon("Pupil", rect(0, 0, 39, 29), object_id=102),  # anatomy: dropped
            polygon("cornea", rect(2, 2, 30, 20), object_id=103),  # anatomy: dropped
            polygon("Katena Forceps", rect(30, 2, 35, 6), object_id=104),
            {
                "id": 105,
                "classTitle": "Katena Forceps",
                "geometryType": "bitmap",
                "bitmap": {"data": supervisely_bitmap(BITMAP_PATCH), "origin": [25, 20]},
            },
        ],
    )
    write_rgb(root / "case_5013/img/case5013_02.png", seed=2)
    write_ann(root / "case_5013/ann/case5013_02.png.json", [polygon("Gauge", rect(1, 1, 3, 2))])
    write_rgb(root / "case_5014/img/case5014_01.png", seed=3)
    write_ann(root / "case_5014/ann/case5014_01.png.json", [polygon("Slit Knife", rect(10, 10, 12, 25))])
    write_rgb(root / "case_5014/img/case5014_02.png", seed=4)  # no annotation: skipped

    splits = root / "TrainIDs_SemanticSegmentation_FiveFold/TrainIDs_Cataract_1k_Instruments"
    splits.mkdir(parents=True)
    (splits / "Cat1k_instrument_0_train.csv").write_text(
        "imgs,masks\n"
        "/home/author/data/Cataract-1K/case_5013/img/case5013_01.png,"
        "/home/author/data/Cataract-1K/case_5013/mask/case5013_01.png\n"
        "D:\\datasets\\cat1k\\case_5014\\img\\case5014_01.png,D:\\datasets\\cat1k\\case_5014\\mask\\x.png\n"
        "/home/author/data/Cataract-1K/case_9999/img/case9999_01.png,/nowhere.png\n"
    )
    (splits / "Cat1k_instrument_0_test.csv").write_text(
        "imgs,masks\n/mnt/x/case_5013/img/case5013_02.png,/mnt/x/case_5013/mask/case5013_02.png\n"
    )
    return root


def test_cataract1k_class_tables():
    assert len(INSTRUMENT_CLASSES) == 10
    assert set(CLASS_ABBREVIATIONS) == set(INSTRUMENT_CLASSES)
    paper_table_rows = ["CC", "CF", "G", "IA", "IK", "KF", "LI", "PhT", "SK", "S"]
    assert sorted(CLASS_ABBREVIATIONS.values()) == sorted(paper_table_rows)


def test_frame_key_from_foreign_paths():
    assert frame_key("/home/a/b/case_5013/img/case5013_01.png") == "case_5013/img/case5013_01.png"
    assert frame_key("C:\\x\\case_5014\\img\\case5014_01.png") == "case_5014/img/case5014_01.png"
    assert frame_key("/home/a/case_5013/mask/case5013_01.png") is None


def test_cataract1k_decodes_polygons_holes_and_bitmaps(cataract_root: Path):
    data = load_dataset(cataract_root, "cataract1k")
    assert [s.sample_id for s in data] == [
        "case_5013/img/case5013_01.png",
        "case_5013/img/case5013_02.png",
        "case_5014/img/case5014_01.png",
    ]
    first = data[0]
    masks = masks_by_id(first)
    assert set(masks) == {"Spatula", "Katena Forceps"}  # anatomy dropped, Katena merged

    spatula = box(4, 15, 5, 20) & ~box(7, 10, 9, 13)
    np.testing.assert_array_equal(masks["Spatula"], spatula)
    assert masks["Spatula"].sum() == 16 * 12 - 5 * 4

    bitmap = np.zeros((H, W), dtype=bool)
    bitmap[20:23, 25:29] = BITMAP_PATCH.astype(bool)
    np.testing.assert_array_equal(masks["Katena Forceps"], box(2, 6, 30, 35) | bitmap)

    image = first.load_image()
    np.testing.assert_array_equal(image, write_rgb(cataract_root / "check.png", seed=1))


def test_cataract1k_keeps_objects_apart_on_request(cataract_root: Path):
    data = load_dataset(cataract_root, "cataract1k", merge_by_class=False)
    masks = masks_by_id(data[0])
    assert set(masks) == {"Spatula#101", "Katena Forceps#104", "Katena Forceps#105"}
    np.testing.assert_array_equal(masks["Katena Forceps#104"], box(2, 6, 30, 35))
    assert masks["Katena Forceps#105"].sum() == BITMAP_PATCH.sum()


def test_cataract1k_splits_match_foreign_paths(cataract_root: Path):
    train = load_dataset(cataract_root, "cataract1k", split="train")
    assert [s.sample_id for s in train] == ["case_5013/img/case5013_01.png", "case_5014/img/case5014_01.png"]
    np.testing.assert_array_equal(train[1].objects[0].load(), box(10, 25, 10, 12))
    test = load_dataset(cataract_root, "cataract1k", split="test")
    assert [s.sample_id for s in test] == ["case_5013/img/case5013_02.png"]

    everything = load_dataset(cataract_root, "cataract1k")
    assert [s.sample_id for s in everything.split("train")] == [s.sample_id for s in train]
    assert everything.classes() == ["Gauge", "Katena Forceps", "Slit Knife", "Spatula"]


def test_cataract1k_missing_split_file_names_the_path(cataract_root: Path):
    with pytest.raises(FileNotFoundError, match=r"Cat1k_instrument_3_train\.csv"):
        load_dataset(cataract_root, "cataract1k", split="train", fold=3)
    with pytest.raises(ValueError, match="unknown Cataract-1K split"):
        load_dataset(cataract_root, "cataract1k", split="validation")


@pytest.mark.parametrize("command", ["eval", "train"])
def test_merge_by_class_flag_of_the_commands_reaches_the_loader(cataract_root: Path, command: str):
    """``--no-merge-by-class`` (rpsam2-eval and the training commands) keeps Supervisely objects apart; the
    default and ``--merge-by-class`` merge the objects of one class in a frame."""
    import importlib

    from trainer.cli.common import UsageError, load_cli_dataset

    parser = importlib.import_module(f"trainer.cli.{command}").build_parser()

    def object_ids(*flags: str, fmt: str = "cataract1k") -> set[str]:
        args = parser.parse_args(["--data", str(cataract_root), "--format", fmt, "--out", "o", *flags])
        return set(masks_by_id(load_cli_dataset(args, None)[0]))

    assert object_ids() == object_ids("--merge-by-class") == {"Spatula", "Katena Forceps"}
    assert object_ids("--no-merge-by-class") == {"Spatula#101", "Katena Forceps#104", "Katena Forceps#105"}
    with pytest.raises(UsageError, match="cataract1k only"):
        object_ids("--no-merge-by-class", fmt="folder")
