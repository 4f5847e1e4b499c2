"""The plain folder layout (images/, masks/, splits/):
checked pixel by pixel on a small fixture written in the real format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.unit.trainer.support_datasets import H, W, box, masks_by_id, write_rgb
from trainer.datasets import load_dataset


@pytest.fixture()
def folder_root(tmp_path: Path):
    root = tmp_path / "plain"
    write_rgb(root / "images/frame_a.png", seed=10)
    write_rgb(root / "images/frame__b.jpg", seed=11)
    (root / "masks").mkdir()
    drawn = {
        "frame_a__Spatula__0.png": box(1, 5, 1, 5),
        "frame_a__Spatula__1.png": box(10, 12, 20, 30),
        "frame_a__Lens Injector__0.png": box(20, 25, 2, 8),
        "frame__b__Gauge__0.png": box(0, 29, 39, 39),
    }
    for name, mask in drawn.items():
        assert cv2.imwrite(str(root / "masks" / name), mask.astype(np.uint8) * 255)
    (root / "splits").mkdir()
    (root / "splits/train.txt").write_text("# training frames\nframe_a\n\n")
    (root / "splits/test.txt").write_text("frame__b\n")
    return root, drawn


def test_folder_layout(folder_root):
    root, drawn = folder_root
    data = load_dataset(root, "folder")
    assert [s.sample_id for s in data] == ["frame__b", "frame_a"]
    a = data[1]
    decoded = masks_by_id(a)
    assert set(decoded) == {"Spatula__0", "Spatula__1", "Lens Injector__0"}
    np.testing.assert_array_equal(decoded["Spatula__1"], drawn["frame_a__Spatula__1.png"])
    np.testing.assert_array_equal(decoded["Lens Injector__0"], drawn["frame_a__Lens Injector__0.png"])
    np.testing.assert_array_equal(masks_by_id(data[0])["Gauge__0"], drawn["frame__b__Gauge__0.png"])
    assert data.class_counts() == {"Gauge": 1, "Lens Injector": 1, "Spatula": 2}
    assert [s.sample_id for s in load_dataset(root, "folder", split="train")] == ["frame_a"]
    assert [s.sample_id for s in data.split("test")] == ["frame__b"]


def test_folder_errors(folder_root):
    root, _ = folder_root
    with pytest.raises(FileNotFoundError, match=r"splits/val\.txt"):
        load_dataset(root, "folder", split="val")
    assert cv2.imwrite(str(root / "masks/ghost__Gauge__0.png"), np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match="ghost__Gauge__0.png"):
        load_dataset(root, "folder")
