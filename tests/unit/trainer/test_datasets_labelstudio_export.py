"""Label Studio JSON exports (brush RLE, latest non-cancelled annotation):
checked pixel by pixel on a small fixture written in the real format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.converter.brush import mask2rle

from tests.unit.trainer.support_datasets import H, W, masks_by_id, write_rgb
from trainer.datasets import load_dataset


def brush_item(region_id: str, label: str, mask: np.ndarray) -> dict:
    return {
        "id": region_id,
        "type": "brushlabels",
        "from_name": "tag",
        "to_name": "image",
        "original_width": int(mask.shape[1]),
        "original_height": int(mask.shape[0]),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask2rle(mask.astype(np.uint8) * 255), "brushlabels": [label]},
    }


@pytest.fixture()
def labelstudio_export(tmp_path: Path):
    root = tmp_path / "ls"
    image_a = write_rgb(root / "imgs/a.png", seed=8)
    image_c = write_rgb(root / "data/upload/3/c.png", seed=9)
    rng = np.random.default_rng(0)
    masks = {k: rng.random((H, W)) < 0.3 for k in ("old", "gauge", "spatula", "cancelled", "skipped")}
    tasks = [
        {
            "id": 1,
            "data": {"image": "/data/local-files/?d=imgs/a.png"},
            "annotations": [
                {"id": 10, "was_cancelled": False, "updated_at": "2024-01-01T10:00:00.000000Z",
                 "result": [brush_item("r1", "Spatula", masks["old"])]},
                {"id": 12, "was_cancelled": True, "updated_at": "2024-03-01T10:00:00.000000Z",
                 "result": [brush_item("r9", "Spatula", masks["cancelled"])]},
                {"id": 11, "was_cancelled": False, "updated_at": "2024-02-01T10:00:00.000000Z",
                 "result": [brush_item("r2", "Gauge", masks["gauge"]),
                            brush_item("r3", "Spatula", masks["spatula"]),
                            {"id": "k1", "type": "keypointlabels", "value": {"x": 5, "y": 5}}]},
            ],
            "predictions": [{"result": [brush_item("p1", "Gauge", masks["old"])]}],
        },
        {
            "id": 2,
            "data": {"image": "/data/local-files/?d=imgs/a.png"},
            "annotations": [
                {"id": 20, "was_cancelled": True, "result": [brush_item("r", "Gauge", masks["skipped"])]}
            ],
        },
        {
            "id": 3,
            "data": {"image": "/data/upload/3/c.png"},
            "annotations": [
                {"id": 30, "was_cancelled": False, "updated_at": "2024-01-05T00:00:00Z", "result": []}
            ],
        },
    ]
    path = root / "export.json"
    path.write_text(json.dumps(tasks))
    return path, masks, image_a, image_c


def test_labelstudio_latest_non_cancelled_annotation_wins(labelstudio_export):
    path, masks, image_a, image_c = labelstudio_export
    data = load_dataset(path, "labelstudio")
    assert [s.sample_id for s in data] == ["task-1", "task-3"]  # task 2 only has a cancelled one
    first = data[0]
    assert first.meta["annotation_id"] == 11
    decoded = masks_by_id(first)
    assert set(decoded) == {"r2", "r3"}
    assert {o.object_id: o.class_name for o in first.objects} == {"r2": "Gauge", "r3": "Spatula"}
    np.testing.assert_array_equal(decoded["r2"], masks["gauge"])
    np.testing.assert_array_equal(decoded["r3"], masks["spatula"])
    assert data[1].objects == []

    np.testing.assert_array_equal(first.load_image(), image_a)
    np.testing.assert_array_equal(data[1].load_image(), image_c)


def test_labelstudio_custom_resolver_and_remote_urls(labelstudio_export, tmp_path: Path):
    path, _, image_a, _ = labelstudio_export
    seen = []

    def resolve(url: str) -> np.ndarray:
        seen.append(url)
        return np.zeros((H, W, 4), dtype=np.uint8)  # RGBA array: alpha must be dropped

    data = load_dataset(path, "labelstudio", resolve_image=resolve)
    assert data[0].load_image().shape == (H, W, 3)
    assert seen == ["/data/local-files/?d=imgs/a.png"]

    remote = tmp_path / "remote.json"
    remote.write_text(json.dumps([{"id": 7, "data": {"image": "https://example.org/x.png"},
                                   "annotations": [{"id": 1, "result": []}]}]))
    with pytest.raises(ValueError, match="resolve_image"):
        load_dataset(remote, "labelstudio")[0].load_image()
    with pytest.raises(ValueError, match="no splits"):
        load_dataset(path, "labelstudio", split="train")
