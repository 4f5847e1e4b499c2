"""CaDIS (label images, Task II classes, official video splits):
checked pixel by pixel on a small fixture written in the real format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.unit.trainer.support_datasets import masks_by_id, write_rgb
from trainer.datasets import load_dataset
from trainer.datasets.cadis import CADIS_CLASSES, TASK2_ANATOMY_AND_OTHERS, TASK2_IGNORED, TASK2_INSTRUMENTS


def test_cadis_tables_cover_every_class_once():
    ids = [i for group in TASK2_INSTRUMENTS.values() for i in group]
    ids += list(TASK2_ANATOMY_AND_OTHERS) + list(TASK2_IGNORED)
    assert sorted(ids) == sorted(CADIS_CLASSES) == list(range(36))
    assert len(TASK2_INSTRUMENTS) == 10
    # handles are merged into their instrument
    assert 21 in TASK2_INSTRUMENTS["Phacoemulsifier Handpiece"]
    assert CADIS_CLASSES[21] == "Phacoemulsifier Handpiece Handle"


def write_cadis_frame(root: Path, video: str, name: str, label: np.ndarray, seed: int) -> None:
    write_rgb(root / video / "Images" / name, seed=seed, height=label.shape[0], width=label.shape[1])
    (root / video / "Labels").mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(root / video / "Labels" / name), label)


@pytest.fixture()
def cadis_root(tmp_path: Path) -> tuple[Path, np.ndarray]:
    root = tmp_path / "CaDIS"
    label = np.full((16, 20), 6, dtype=np.uint8)  # cornea
    label[2:6, 2:8] = 4  # iris: anatomy
    label[8:10, 1:6] = 7  # hydrodissection cannula  -> Cannula
    label[12:15, 10:18] = 20  # Rycroft cannula handle -> Cannula
    label[0:3, 15:19] = 19  # capsulorhexis forceps
    label[5, 12] = 25  # suture needle: ignored in Task II
    write_cadis_frame(root, "Video01", "Video1_frame000090.png", label, seed=5)
    only_tape = np.full((16, 20), 1, dtype=np.uint8)
    write_cadis_frame(root, "Video05", "Video5_frame000010.png", only_tape, seed=6)
    knife = np.zeros((16, 20), dtype=np.uint8)
    knife[3:5, 3:5] = 28  # primary knife handle -> Primary Knife
    write_cadis_frame(root, "Video12", "Video12_frame000020.png", knife, seed=7)
    return root, label


def test_cadis_groups_task2_instruments(cadis_root):
    root, label = cadis_root
    data = load_dataset(root, "cadis")
    assert [s.sample_id for s in data] == [
        "Video01/Video1_frame000090.png",
        "Video05/Video5_frame000010.png",
        "Video12/Video12_frame000020.png",
    ]
    masks = masks_by_id(data[0])
    assert set(masks) == {"Cannula", "Capsulorhexis Forceps"}
    np.testing.assert_array_equal(masks["Cannula"], (label == 7) | (label == 20))
    np.testing.assert_array_equal(masks["Capsulorhexis Forceps"], label == 19)
    assert data[1].objects == []
    np.testing.assert_array_equal(masks_by_id(data[2])["Primary Knife"][3:5, 3:5], np.ones((2, 2), bool))
    assert data.classes() == ["Cannula", "Capsulorhexis Forceps", "Primary Knife"]


def test_cadis_official_video_splits(cadis_root):
    root, _ = cadis_root
    assert [s.meta["video"] for s in load_dataset(root, "cadis", split="train")] == [1]
    assert [s.meta["video"] for s in load_dataset(root, "cadis", split="val")] == [5]
    assert [s.meta["video"] for s in load_dataset(root, "cadis", split="test")] == [12]
    assert [s.meta["video"] for s in load_dataset(root, "cadis").split("test")] == [12]


def test_cadis_min_pixels(cadis_root):
    root, _ = cadis_root
    # Capsulorhexis forceps covers 3*4 = 12 pixels, the cannula 10 + 24 = 34
    data = load_dataset(root, "cadis", min_pixels=13)
    assert [o.class_name for o in data[0].objects] == ["Cannula"]
