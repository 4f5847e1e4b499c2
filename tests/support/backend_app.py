"""The label config, click items and response helpers shared by the Flask-level tests."""

from __future__ import annotations

import numpy as np
from label_studio_sdk.converter.brush import decode_rle

CONFIG = """
<View>
  <Image name="image" value="$image" zoom="true"/>
  <KeyPointLabels name="kp" toName="image" smart="true">
    <Label value="Spatula"/><Label value="Gauge"/><Label value="Cornea"/>
  </KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true">
    <Label value="Spatula"/><Label value="Gauge"/>
  </RectangleLabels>
  <BrushLabels name="brush" toName="image">
    <Label value="Spatula"/><Label value="Gauge"/>
  </BrushLabels>
</View>
"""
# The same prompts, answered with polygons: no BrushLabels offers the labels.
POLYGON_CONFIG = CONFIG.replace("<BrushLabels", "<PolygonLabels").replace("</BrushLabels>", "</PolygonLabels>").replace(
    'name="brush"', 'name="outline"'
)
# A multi-image task: the Image tag reads a list of URLs; regions carry item_index.
MULTI_IMAGE_CONFIG = CONFIG.replace(
    '<Image name="image" value="$image" zoom="true"/>', '<Image name="image" valueList="$pages"/>'
)


def click(x: float, y: float, label: str = "Spatula", positive: bool | None = True, **extra) -> dict:
    item = {
        "type": "keypointlabels",
        "from_name": "kp",
        "to_name": "image",
        "original_width": 500,
        "original_height": 375,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]},
        **extra,
    }
    if positive is not None:
        item["is_positive"] = positive
    return item


def rect(x: float, y: float, w: float, h: float, label: str = "Spatula", rotation: float = 0, **extra) -> dict:
    """A smart rectangle as the editor serializes it (no is_positive, no value.labels)."""
    return {
        "type": "rectanglelabels",
        "from_name": "box",
        "to_name": "image",
        "original_width": 500,
        "original_height": 375,
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]},
        **extra,
    }


def predict_body(
    clicks: list[dict] | None, image: str = "/data/local-files/?d=voc.png", config: str = CONFIG,
    data: dict | None = None,
) -> dict:
    params = {"context": {"result": clicks}} if clicks is not None else {}
    return {"tasks": [{"id": 7, "data": data or {"image": image}}], "label_config": config, "params": params}


def the_mask(resp) -> tuple[np.ndarray, dict]:
    """The brush mask of the answer (its first region) and that region."""
    assert resp.status_code == 200, resp.data
    result = resp.get_json()["results"][0]["result"][0]
    h, w = result["original_height"], result["original_width"]
    flat = decode_rle(result["value"]["rle"])
    return flat.reshape(h, w, 4)[:, :, 3] > 0, result
