"""The project's labeling config (Label Studio XML) reduced to what the backend needs.

Which BrushLabels (or, failing that, PolygonLabels) control a prompt's label belongs to decides the
``from_name`` / ``to_name`` and the type of the returned region; the Image objects say which task
data key holds the image URL (``valueList`` for multi-image tasks).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from rpsam2_backend.core.errors import BadRequest

_TRUE = {"true", "1", "yes"}
# Label Studio's own configs are a few KB; a model object per config is cached, so bound them.
MAX_CONFIG_CHARS = 1_000_000
_CONTROLS = ("brushlabels", "keypointlabels", "polygonlabels", "rectanglelabels")


@dataclass(frozen=True)
class BrushControl:
    name: str
    to_name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class KeyPointControl:
    name: str
    to_name: str
    labels: tuple[str, ...]
    smart: bool


@dataclass(frozen=True)
class PolygonControl:
    name: str
    to_name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class RectangleControl:
    name: str
    to_name: str
    labels: tuple[str, ...]
    smart: bool


@dataclass(frozen=True)
class ImageObject:
    name: str
    value: str  # e.g. "$image": the task data key, with Label Studio's "$"
    value_list: str = ""  # e.g. "$images": a list of URLs, one image per item_index


@dataclass(frozen=True)
class OutputControl:
    """Where a prompt's answer goes: a BrushLabels or PolygonLabels control on an image."""

    type: str  # "brushlabels" or "polygonlabels" (Label Studio's result type)
    name: str  # from_name
    to_name: str


@dataclass(frozen=True)
class LabelConfig:
    brushes: tuple[BrushControl, ...] = field(default_factory=tuple)
    keypoints: tuple[KeyPointControl, ...] = field(default_factory=tuple)
    images: tuple[ImageObject, ...] = field(default_factory=tuple)
    polygons: tuple[PolygonControl, ...] = field(default_factory=tuple)
    rectangles: tuple[RectangleControl, ...] = field(default_factory=tuple)

    def output_for_label(self, label: str, to_name: str | None = None) -> OutputControl:
        """The control that receives the answer to a prompt of ``label``.

        A BrushLabels control offering the label wins (brush is the default output); otherwise a
        PolygonLabels control offering it (polygon projects, e.g. Cataract-1k's own format).
        """
        if not self.brushes and not self.polygons:
            raise BadRequest(
                "the labeling config has no <BrushLabels> or <PolygonLabels> control: add one whose "
                "labels match the prompt labels so masks can be returned"
            )
        if any(label in b.labels for b in self.brushes) or not self.polygons:
            return OutputControl("brushlabels", *self.brush_for_label(label, to_name))
        offering = [p for p in self.polygons if label in p.labels]
        if not offering:
            known = ", ".join(repr(x) for c in (*self.brushes, *self.polygons) for x in c.labels) or "none"
            raise BadRequest(
                f"label {label!r} is not a label of any <BrushLabels> or <PolygonLabels> control "
                f"(their labels: {known}); give the prompt controls and the output control the same label names"
            )
        name, target = _on_image(offering, to_name)
        return OutputControl("polygonlabels", name, target)

    def brush_for_label(self, label: str, to_name: str | None = None) -> tuple[str, str]:
        """(from_name, to_name) of the BrushLabels control that offers ``label``.

        With ``to_name`` (the Image the click was made on), a control on that image is preferred;
        a label offered by brushes on other images only is still accepted, since the mask is
        drawn on whatever image that control targets.
        """
        if not self.brushes:
            raise BadRequest(
                "the labeling config has no <BrushLabels> control: add one whose labels match the "
                "keypoint labels so masks can be returned"
            )
        offering = [b for b in self.brushes if label in b.labels]
        if not offering:
            known = ", ".join(repr(x) for b in self.brushes for x in b.labels) or "none"
            raise BadRequest(
                f"label {label!r} is not a label of any <BrushLabels> control (brush labels: {known}); "
                f"give the <KeyPointLabels> and <BrushLabels> controls the same label names"
            )
        return _on_image(offering, to_name)


def _on_image(offering: list, to_name: str | None) -> tuple[str, str]:
    """(name, to_name) of the first control, preferring one on the image ``to_name``."""
    if to_name:
        same_image = [c for c in offering if to_name in _names(c.to_name)]
        if same_image:
            offering = same_image
    chosen = offering[0]
    targets = _names(chosen.to_name)
    return chosen.name, (to_name if to_name in targets else targets[0])


def _names(to_name: str) -> list[str]:
    # toName may list several objects, comma separated.
    return [n.strip() for n in to_name.split(",") if n.strip()]


def _labels(element: ET.Element) -> tuple[str, ...]:
    labels = []
    for child in element.iter():
        if child is element or child.tag.lower() != "label":
            continue
        value = child.get("value")
        if value is not None:
            labels.append(value)
    return tuple(labels)


def parse_label_config(xml: str) -> LabelConfig:
    """Parse a Label Studio labeling config; BadRequest when it is not usable XML."""
    if not isinstance(xml, str):
        raise BadRequest(f"the labeling config must be XML text, got {type(xml).__name__}")
    if not xml.strip():
        raise BadRequest("the labeling config is empty")
    if len(xml) > MAX_CONFIG_CHARS:
        raise BadRequest(f"the labeling config has {len(xml)} characters, more than {MAX_CONFIG_CHARS}")
    try:
        # No DTD at all: that rules out entity expansion ("billion laughs") and external entities.
        root = SafeET.fromstring(xml, forbid_dtd=True)
    except DefusedXmlException:
        raise BadRequest("the labeling config must not contain a DOCTYPE or ENTITY declaration") from None
    except (ET.ParseError, ValueError) as exc:
        raise BadRequest(f"the labeling config is not valid XML: {exc}") from None

    brushes: list[BrushControl] = []
    keypoints: list[KeyPointControl] = []
    images: list[ImageObject] = []
    polygons: list[PolygonControl] = []
    rectangles: list[RectangleControl] = []
    for element in root.iter():
        tag = element.tag.lower() if isinstance(element.tag, str) else ""
        name = element.get("name", "")
        to_name = element.get("toName", "")
        if tag in _CONTROLS and not (name and _names(to_name)):
            raise BadRequest(f"<{element.tag}> in the labeling config needs both name and toName attributes")
        if tag == "brushlabels":
            brushes.append(BrushControl(name, to_name, _labels(element)))
        elif tag == "keypointlabels":
            keypoints.append(KeyPointControl(name, to_name, _labels(element), _smart(element)))
        elif tag == "polygonlabels":
            polygons.append(PolygonControl(name, to_name, _labels(element)))
        elif tag == "rectanglelabels":
            rectangles.append(RectangleControl(name, to_name, _labels(element), _smart(element)))
        elif tag == "image":
            images.append(ImageObject(name, element.get("value", ""), element.get("valueList", "")))
    return LabelConfig(tuple(brushes), tuple(keypoints), tuple(images), tuple(polygons), tuple(rectangles))


def _smart(element: ET.Element) -> bool:
    # What the config asks for explicitly (Label Studio's own default is smart for every control).
    return any(element.get(a, "").lower() in _TRUE for a in ("smart", "smartOnly"))
