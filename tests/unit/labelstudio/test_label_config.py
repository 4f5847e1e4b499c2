"""Labeling config parsing: which BrushLabels (or PolygonLabels) control answers a prompt's label."""

from __future__ import annotations

import pytest
from label_studio_sdk.label_interface import LabelInterface

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.labelstudio.label_config import OutputControl, parse_label_config
from tests.support.paths import REPO_ROOT
from trainer.datasets.cataract1k import INSTRUMENT_CLASSES

SHIPPED = REPO_ROOT / "deploy" / "label_config.xml"
SHIPPED_POLYGONS = REPO_ROOT / "deploy" / "label_config_polygons.xml"

# The shipped configs name exactly the classes the Cataract-1k loader maps (the paper's 10).
PAPER_CLASSES = list(INSTRUMENT_CLASSES)


def _config(keypoint_attrs: str = 'smart="true"', brush: bool = True) -> str:
    labels = "\n".join(f'    <Label value="{c}" background="#00ff00"/>' for c in PAPER_CLASSES)
    brush_xml = f'  <BrushLabels name="mask" toName="frame">\n{labels}\n  </BrushLabels>' if brush else ""
    return f"""<View>
  <Image name="frame" value="$image" zoom="true"/>
  <KeyPointLabels name="point" toName="frame" {keypoint_attrs}>
{labels}
  </KeyPointLabels>
{brush_xml}
</View>"""


def test_realistic_config_is_parsed() -> None:
    config = parse_label_config(_config())
    assert [(i.name, i.value) for i in config.images] == [("frame", "$image")]
    assert len(config.keypoints) == 1
    keypoint = config.keypoints[0]
    assert (keypoint.name, keypoint.to_name, keypoint.smart) == ("point", "frame", True)
    assert list(keypoint.labels) == PAPER_CLASSES
    assert [(b.name, b.to_name, list(b.labels)) for b in config.brushes] == [("mask", "frame", PAPER_CLASSES)]


@pytest.mark.parametrize("label", PAPER_CLASSES)
def test_every_class_maps_to_the_brush_control(label: str) -> None:
    config = parse_label_config(_config())
    assert config.brush_for_label(label) == ("mask", "frame")
    assert config.brush_for_label(label, "frame") == ("mask", "frame")


def test_smart_flag_off_and_smart_only() -> None:
    assert parse_label_config(_config(keypoint_attrs="")).keypoints[0].smart is False
    assert parse_label_config(_config(keypoint_attrs='smartOnly="true"')).keypoints[0].smart is True
    assert parse_label_config(_config(keypoint_attrs='smart="false"')).keypoints[0].smart is False


def test_to_name_picks_the_control_on_that_image() -> None:
    xml = """<View>
      <Image name="left" value="$left"/>
      <Image name="right" value="$right"/>
      <BrushLabels name="left_mask" toName="left"><Label value="Gauge"/><Label value="Spatula"/></BrushLabels>
      <BrushLabels name="right_mask" toName="right"><Label value="Gauge"/></BrushLabels>
    </View>"""
    config = parse_label_config(xml)
    assert [i.value for i in config.images] == ["$left", "$right"]
    assert config.brush_for_label("Gauge", "right") == ("right_mask", "right")
    assert config.brush_for_label("Gauge", "left") == ("left_mask", "left")
    assert config.brush_for_label("Gauge") == ("left_mask", "left")
    # only the left brush offers Spatula: it answers even for a click on the right image
    assert config.brush_for_label("Spatula", "right") == ("left_mask", "left")


def test_comma_separated_to_name() -> None:
    xml = """<View><Image name="a" value="$a"/><Image name="b" value="$b"/>
      <BrushLabels name="m" toName="a,b"><Label value="Gauge"/></BrushLabels></View>"""
    config = parse_label_config(xml)
    assert config.brush_for_label("Gauge", "b") == ("m", "b")
    assert config.brush_for_label("Gauge") == ("m", "a")


def test_unknown_label_names_the_known_ones() -> None:
    config = parse_label_config(_config())
    with pytest.raises(BadRequest, match="'Scalpel' is not a label of any <BrushLabels>") as info:
        config.brush_for_label("Scalpel")
    assert info.value.status == 400
    assert "'Katena Forceps'" in info.value.message


def test_no_brush_control() -> None:
    config = parse_label_config(_config(brush=False))
    with pytest.raises(BadRequest, match="no <BrushLabels> control"):
        config.brush_for_label("Gauge")


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<View><Image name='i' value='$image'></View>", "not valid XML"),
        ("not xml at all", "not valid XML"),
        ("", "empty"),
        ("   ", "empty"),
        (
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            "<View><Header value='&lol2;'/></View>",
            "DOCTYPE",
        ),
        ("<View><BrushLabels name='m'><Label value='Gauge'/></BrushLabels></View>", "name and toName"),
    ],
)
def test_unusable_configs_are_bad_requests(xml: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_label_config(xml)


@pytest.mark.parametrize(("path", "output"), [(SHIPPED, "brushlabels"), (SHIPPED_POLYGONS, "polygonlabels")])
def test_shipped_configs_parse_with_the_paper_classes(path, output: str) -> None:
    config = parse_label_config(path.read_text())
    assert len(config.images) == 1 and config.images[0].value == "$image"
    assert len(config.keypoints) == 1 and config.keypoints[0].smart
    assert len(config.rectangles) == 1 and config.rectangles[0].smart
    assert list(config.keypoints[0].labels) == PAPER_CLASSES
    assert list(config.rectangles[0].labels) == PAPER_CLASSES
    outputs = config.brushes if output == "brushlabels" else config.polygons
    assert len(config.brushes) + len(config.polygons) == 1
    assert list(outputs[0].labels) == PAPER_CLASSES
    image = config.images[0].name
    for label in PAPER_CLASSES:
        assert config.output_for_label(label, config.keypoints[0].to_name) == OutputControl(
            output, outputs[0].name, image
        )


@pytest.mark.parametrize("path", [SHIPPED, SHIPPED_POLYGONS])
def test_shipped_configs_read_the_same_in_the_label_studio_sdk(path) -> None:
    # An independent parser (Label Studio's own) must see the same controls and labels.
    ours = parse_label_config(path.read_text())
    sdk = LabelInterface(path.read_text())
    sdk_controls = {c.name: (type(c).__name__, list(c.to_name), list(c.labels)) for c in sdk.controls}
    keypoint, rectangle = ours.keypoints[0], ours.rectangles[0]
    output = (ours.brushes or ours.polygons)[0]
    assert sdk_controls == {
        keypoint.name: ("KeyPointLabelsTag", [keypoint.to_name], list(keypoint.labels)),
        rectangle.name: ("RectangleLabelsTag", [rectangle.to_name], list(rectangle.labels)),
        output.name: ("BrushLabelsTag" if ours.brushes else "PolygonLabelsTag", [output.to_name], list(output.labels)),
    }
    assert [(o.name, o.value) for o in sdk.objects] == [(i.name, i.value) for i in ours.images]


def test_shipped_brush_control_is_not_smart_and_the_polygon_control_has_no_smart_attribute() -> None:
    # smart="false" keeps the smart brush out of Auto-Detect; on PolygonLabels it would also hide
    # the ordinary polygon tool (seen in Label Studio 1.23.2's editor).
    assert 'BrushLabels name="tag" toName="image" smart="false"' in SHIPPED.read_text()
    polygons = SHIPPED_POLYGONS.read_text()
    assert "<PolygonLabels" in polygons and 'smart=' not in polygons.split("<PolygonLabels", 1)[1].split(">", 1)[0]


POLYGON_ONLY = """<View>
  <Image name="img" value="$image"/>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="Gauge"/><Label value="Spatula"/></KeyPointLabels>
  <PolygonLabels name="outline" toName="img"><Label value="Gauge"/><Label value="Spatula"/></PolygonLabels>
</View>"""


BRUSH_GAUGE = '<BrushLabels name="mask" toName="img"><Label value="Gauge"/></BrushLabels></View>'


def test_a_polygon_only_project_answers_with_polygons() -> None:
    config = parse_label_config(POLYGON_ONLY)
    assert [(p.name, p.to_name, p.labels) for p in config.polygons] == [("outline", "img", ("Gauge", "Spatula"))]
    assert config.output_for_label("Gauge", "img") == OutputControl("polygonlabels", "outline", "img")


def test_brush_wins_when_both_controls_offer_the_label() -> None:
    xml = POLYGON_ONLY.replace("</View>", BRUSH_GAUGE)
    config = parse_label_config(xml)
    assert config.output_for_label("Gauge", "img") == OutputControl("brushlabels", "mask", "img")
    # Spatula is offered by the polygon control only
    assert config.output_for_label("Spatula", "img") == OutputControl("polygonlabels", "outline", "img")


def test_a_label_no_output_control_offers_names_the_known_ones() -> None:
    xml = POLYGON_ONLY.replace("</View>", BRUSH_GAUGE)
    with pytest.raises(BadRequest, match=r"'Cornea' is not a label of any <BrushLabels> or <PolygonLabels>") as info:
        parse_label_config(xml).output_for_label("Cornea")
    assert "'Spatula'" in info.value.message and info.value.status == 400


def test_a_config_without_output_controls() -> None:
    with pytest.raises(BadRequest, match="no <BrushLabels> or <PolygonLabels> control"):
        parse_label_config(_config(brush=False)).output_for_label("Gauge")


def test_rectangles_and_multi_image_tags_are_parsed() -> None:
    xml = """<View><Image name="pages" valueList="$images"/>
      <RectangleLabels name="box" toName="pages" smart="true"><Label value="Gauge"/></RectangleLabels>
      <RectangleLabels name="plain" toName="pages"><Label value="Gauge"/></RectangleLabels>
      <BrushLabels name="mask" toName="pages"><Label value="Gauge"/></BrushLabels></View>"""
    config = parse_label_config(xml)
    assert [(r.name, r.smart) for r in config.rectangles] == [("box", True), ("plain", False)]
    assert [(i.name, i.value, i.value_list) for i in config.images] == [("pages", "", "$images")]
    with pytest.raises(BadRequest, match="name and toName"):
        parse_label_config("<View><RectangleLabels name='b'><Label value='x'/></RectangleLabels></View>")
