"""Task data -> image URL: single-image tags by to_name, multi-image tags by item_index."""

from __future__ import annotations

import pytest

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.labelstudio.label_config import parse_label_config
from rpsam2_backend.labelstudio.tasks import image_url

TWO_TAGS = parse_label_config("""<View>
  <Image name="left" value="$left"/><Image name="pages" valueList="$pages"/>
  <BrushLabels name="m" toName="left,pages"><Label value="Gauge"/></BrushLabels></View>""")


def _task(**data: object) -> dict:
    return {"id": 3, "data": data}


def test_single_image_tag_by_to_name() -> None:
    task = _task(left="/data/upload/1/a.png", pages=["/p0.png", "/p1.png"])
    assert image_url(task, TWO_TAGS, "left") == "/data/upload/1/a.png"
    assert image_url(task, TWO_TAGS, "left", item_index=None) == "/data/upload/1/a.png"


def test_multi_image_tag_by_item_index() -> None:
    task = _task(left="/a.png", pages=["/p0.png", "/p1.png", "/p2.png"])
    assert image_url(task, TWO_TAGS, "pages", 2) == "/p2.png"
    assert image_url(task, TWO_TAGS, "pages", 0) == "/p0.png"
    assert image_url(task, TWO_TAGS, "pages") == "/p0.png"  # no item_index: the first page


def test_item_index_outside_the_list() -> None:
    with pytest.raises(BadRequest, match=r"item_index 3 is outside the 2 images of task 3 \(\$pages\)"):
        image_url(_task(pages=["/p0.png", "/p1.png"]), TWO_TAGS, "pages", 3)


def test_a_list_item_that_is_not_a_url() -> None:
    with pytest.raises(BadRequest, match=r"\$pages\[1\] is not an image URL"):
        image_url(_task(pages=["/p0.png", {"url": "/p1.png"}]), TWO_TAGS, "pages", 1)


def test_missing_image_names_the_data_keys() -> None:
    with pytest.raises(BadRequest, match="task 3 has no image for pages .data keys: other"):
        image_url(_task(other="x"), TWO_TAGS, "pages", 0)
    with pytest.raises(BadRequest, match="no 'data' object"):
        image_url({"id": 1}, TWO_TAGS)
