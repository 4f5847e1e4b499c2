"""A tiny dataset in Cataract-1K's real layout (Supervisely JSON polygons, fold-0 split CSVs) whose
objects are bright rectangles on a dark background: the CLI tests of evaluation, the ablation and the
paper preset run on it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

H, W = 60, 80
SPLITS = "TrainIDs_SemanticSegmentation_FiveFold/TrainIDs_Cataract_1k_Instruments"

# frame -> [(class title, x0, y0, x1, y1)] ; case_5013 is the training video, case_5014 the test video
FRAMES: dict[str, list[tuple[str, int, int, int, int]]] = {
    "case_5013/case5013_01": [("Spatula", 8, 10, 40, 22), ("Gauge", 50, 30, 70, 52)],
    "case_5013/case5013_02": [("Spatula", 20, 30, 60, 40)],
    "case_5013/case5013_03": [("Gauge", 10, 8, 28, 40), ("Spatula", 40, 12, 72, 24)],
    "case_5014/case5014_01": [("Spatula", 6, 6, 50, 18), ("Gauge", 55, 20, 75, 50)],
    "case_5014/case5014_02": [("Spatula", 12, 28, 66, 44)],
}
TRAIN = ["case_5013/case5013_01", "case_5013/case5013_02", "case_5013/case5013_03"]
TEST = ["case_5014/case5014_01", "case_5014/case5014_02"]


def write_cataract1k(root: Path) -> Path:
    rng = np.random.default_rng(3)
    colours = {"Spatula": (230, 220, 200), "Gauge": (120, 200, 240)}
    for frame, objects in FRAMES.items():
        case, name = frame.split("/")
        image = rng.integers(0, 50, (H, W, 3), dtype=np.uint8)
        ann_objects = []
        for title, x0, y0, x1, y1 in objects:
            image[y0 : y1 + 1, x0 : x1 + 1] = colours[title]
            ann_objects.append({"classTitle": title, "geometryType": "polygon",
                                "points": {"exterior": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "interior": []}})
        (root / case / "img").mkdir(parents=True, exist_ok=True)
        (root / case / "ann").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / case / "img" / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        ann = {"description": "", "tags": [], "size": {"height": H, "width": W}, "objects": ann_objects}
        (root / case / "ann" / f"{name}.png.json").write_text(json.dumps(ann))
    splits = root / SPLITS
    splits.mkdir(parents=True, exist_ok=True)
    for split, frames in (("train", TRAIN), ("test", TEST)):
        rows = [f"/data/Cataract-1K/{f.split('/')[0]}/img/{f.split('/')[1]}.png,/x/mask.png" for f in frames]
        (splits / f"Cat1k_instrument_0_{split}.csv").write_text("imgs,masks\n" + "\n".join(rows) + "\n")
    return root
