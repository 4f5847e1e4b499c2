"""Labeling config parsing: which BrushLabels control answers a click's label."""

from __future__ import annotations

import pytest
from label_studio_sdk.label_interface import LabelInterface

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.labelstudio.label_config import parse_label_config
from tests.support.paths import REPO_ROOT

SHIPPED = REPO_ROOT / "deploy" / "label_config.xml"

# Cataract-1k's 10 instrument classes, as the paper lists them.
PAPER_CLASSES = [
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
]


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


def test_shipped_config_parses_with_the_paper_classes() -> None:
    config = parse_label_config(SHIPPED.read_text())
    assert len(config.images) == 1 and config.images[0].value == "$image"
    assert len(config.keypoints) == 1 and config.keypoints[0].smart
    assert len(config.brushes) == 1
    assert list(config.keypoints[0].labels) == PAPER_CLASSES
    assert list(config.brushes[0].labels) == PAPER_CLASSES
    image = config.images[0].name
    for label in PAPER_CLASSES:
        assert config.brush_for_label(label, config.keypoints[0].to_name) == (config.brushes[0].name, image)


def test_shipped_config_reads_the_same_in_the_label_studio_sdk() -> None:
    # An independent parser (Label Studio's own) must see the same controls and labels.
    ours = parse_label_config(SHIPPED.read_text())
    sdk = LabelInterface(SHIPPED.read_text())
    sdk_controls = {c.name: (type(c).__name__, list(c.to_name), list(c.labels)) for c in sdk.controls}
    keypoint, brush = ours.keypoints[0], ours.brushes[0]
    assert sdk_controls == {
        keypoint.name: ("KeyPointLabelsTag", [keypoint.to_name], list(keypoint.labels)),
        brush.name: ("BrushLabelsTag", [brush.to_name], list(brush.labels)),
    }
    assert [(o.name, o.value) for o in sdk.objects] == [(i.name, i.value) for i in ours.images]
