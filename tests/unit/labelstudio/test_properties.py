"""Whatever arrives from the network, the Label Studio face answers with a result or a
BackendError (an HTTP status and a message), never another exception: context parsing, label
configs, brush RLE and image bytes, under generated input (hypothesis)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rpsam2_backend.core.errors import BackendError
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.labelstudio.brush import mask_to_rle, rle_to_mask
from rpsam2_backend.labelstudio.images import ImageLoader
from rpsam2_backend.labelstudio.label_config import parse_label_config
from rpsam2_backend.labelstudio.prompts import parse_context

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)
KEYS = st.sampled_from(["type", "value", "x", "y", "keypointlabels", "is_positive", "original_width",
                        "original_height", "from_name", "to_name", "result", "width", "labels", "id"])
# JSON biased towards the shape of a click context, so the parser's deeper checks are reached.
CONTEXTISH = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["keypointlabels", "Spatula", "click", "image", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=30,
)
CLICK = st.fixed_dictionaries({
    "type": st.just("keypointlabels"), "from_name": st.just("kp"), "to_name": st.just("image"),
    "original_width": st.integers(-2, 3000) | st.floats() | st.none(),
    "original_height": st.integers(-2, 3000) | st.just("375"),
    "is_positive": st.booleans() | st.none() | st.just("yes"),
    "value": st.fixed_dictionaries({
        "x": st.floats(-10, 110) | st.just(float("nan")) | st.text(max_size=3),
        "y": st.floats(-10, 110) | st.booleans(),
        "keypointlabels": st.lists(st.sampled_from(["Spatula", "Gauge", ""]), max_size=2) | st.just("Spatula"),
    }),
})


def _outcome(call, *args) -> object:
    try:
        return call(*args)
    except BackendError as exc:
        assert 400 <= exc.status < 600 and exc.message
        return exc


@given(CONTEXTISH | st.fixed_dictionaries({"result": st.lists(CLICK | CONTEXTISH, max_size=5)}))
@example({"result": [{"type": "keypointlabels", "value": {"x": float("inf"), "y": 1}}]})
@example({"result": "not a list"})
def test_context_parsing_gives_a_request_none_or_a_backend_error(context) -> None:
    _outcome(parse_context, context)


XMLISH = st.lists(
    st.sampled_from([
        "<View>", "</View>", '<Image name="image" value="$image"/>', '<BrushLabels name="b" toName="image">',
        "</BrushLabels>", '<KeyPointLabels name="k" toName="image" smart="true">', "</KeyPointLabels>",
        '<Label value="Spatula"/>', "<!DOCTYPE x>", '<!ENTITY a "b">', "&a;", "<", ">", '"', "<?xml?>", "\x00",
        '<BrushLabels name="" toName="">', "]]>", "<![CDATA[", "-->", "<!--",
    ]),
    max_size=12,
).map("".join)


@given(XMLISH | st.text(max_size=60) | st.integers() | st.none() | st.binary(max_size=20))
@example('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><View>&b;</View>')
@example('<!DOCTYPE x SYSTEM "http://169.254.169.254/"><View/>')
def test_label_config_parsing_gives_a_config_or_a_backend_error(xml) -> None:
    _outcome(parse_label_config, xml)


@given(
    st.binary(max_size=64) | st.lists(st.integers(-300, 300), max_size=40) | st.integers(0, 10**9) | st.text(),
    st.integers(-1, 8), st.integers(-1, 8),
)
@example(b"\xff\xff\xff\xff\xff\xff\xff", 2, 2)
@example(10**9, 2, 2)
def test_rle_decoding_gives_a_mask_or_a_backend_error(rle, height, width) -> None:
    out = _outcome(rle_to_mask, rle, height, width)
    if isinstance(out, np.ndarray):
        assert out.shape == (height, width) and out.dtype == bool


@given(st.data())
def test_rle_of_a_mask_decodes_back_to_it(data) -> None:
    h, w = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w)), dtype=bool).reshape(h, w)
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask), h, w), mask)


def _encoded(ext: str) -> bytes:
    rgb = (np.arange(24 * 32 * 3) % 251).astype(np.uint8).reshape(24, 32, 3)
    ok, buf = cv2.imencode(ext, rgb)
    assert ok
    return buf.tobytes()


SEEDS = [_encoded(ext) for ext in (".png", ".jpg", ".bmp", ".tiff", ".webp")]


@st.composite
def damaged_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@pytest.fixture(scope="module")
def loader() -> ImageLoader:
    return ImageLoader(Settings.from_env({"RPSAM2_MAX_IMAGE_PIXELS": "100000"}))


@given(data=damaged_images() | st.binary(max_size=256))
@example(data=b"")
@example(data=b"GIF89a\xff\xff\xff\xff")  # a header that claims 65535x65535 pixels
def test_image_decoding_gives_pixels_or_a_backend_error(loader, data) -> None:
    out = _outcome(loader.decode, data, "generated")
    if isinstance(out, np.ndarray):
        assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
