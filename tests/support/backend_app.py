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
  <BrushLabels name="brush" toName="image">
    <Label value="Spatula"/><Label value="Gauge"/>
  </BrushLabels>
</View>
"""


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


def predict_body(clicks: list[dict] | None, image: str = "/data/local-files/?d=voc.png") -> dict:
    params = {"context": {"result": clicks}} if clicks is not None else {}
    return {"tasks": [{"id": 7, "data": {"image": image}}], "label_config": CONFIG, "params": params}


def the_mask(resp) -> tuple[np.ndarray, dict]:
    assert resp.status_code == 200, resp.data
    result = resp.get_json()["results"][0]["result"][0]
    h, w = result["original_height"], result["original_width"]
    flat = decode_rle(result["value"]["rle"])
    return flat.reshape(h, w, 4)[:, :, 3] > 0, result
