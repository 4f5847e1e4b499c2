"""Brush RLE written as JSON from bytes: exactly the text ``json.dumps(list(rle))`` gives."""

from __future__ import annotations

import datetime
import json
import uuid

import numpy as np
import pytest
from flask import Flask, jsonify
from label_studio_sdk.converter import brush as sdk

from rpsam2_backend.labelstudio.brush import mask_to_rle_bytes
from rpsam2_backend.labelstudio.rle_json import LabelStudioJSONEncoder, RLEBytes, rle_json
from rpsam2_backend.web.json_provider import LabelStudioJSONProvider

RNG = np.random.default_rng(20240612)
COMPACT = (",", ":")  # what Flask's jsonify uses unless pretty printing is on


def random_bytes(n: int) -> bytes:
    return RNG.integers(0, 256, size=n, dtype=np.uint8).tobytes()


BYTE_STRINGS = {
    "empty": b"",
    "one zero": b"\x00",
    "one 255": b"\xff",
    "all 256 values in order": bytes(range(256)),
    "all 256 values reversed": bytes(range(255, -1, -1)),
    "random 1": random_bytes(1),
    "random 7": random_bytes(7),
    "random 100k with every value": bytes(range(256)) + random_bytes(100_000),
    "zeros only": bytes(1000),  # zero is the table's padding byte: it must still be written
    "one and two digit values": bytes([1, 10, 99, 100, 9, 0, 200, 255, 0, 0]),
}


@pytest.mark.parametrize("name", list(BYTE_STRINGS))
def test_rle_json_equals_json_dumps_of_the_list(name: str) -> None:
    raw = BYTE_STRINGS[name]
    assert rle_json(raw) == json.dumps(list(raw))
    assert rle_json(raw, ", ") == json.dumps(list(raw))
    assert rle_json(raw, ",") == json.dumps(list(raw), separators=COMPACT)
    assert json.loads(rle_json(raw, ",")) == list(raw)


def test_rle_json_of_empty_bytes_is_an_empty_array() -> None:
    assert rle_json(b"") == "[]" == json.dumps([])
    assert rle_json(b"", ",") == "[]"
    assert rle_json(RLEBytes(b"")) == "[]"


def test_rle_json_of_a_real_mask_equals_the_sdk_list() -> None:
    mask = (RNG.random((375, 500)) < 0.5).astype(np.uint8) * 255
    expected = sdk.mask2rle(mask)
    raw = mask_to_rle_bytes(mask)
    assert rle_json(raw, ",") == json.dumps(expected, separators=COMPACT)
    assert rle_json(raw) == json.dumps(expected)


def test_rle_json_accepts_bytes_like_inputs() -> None:
    raw = bytes(range(256))
    assert rle_json(RLEBytes(raw)) == rle_json(bytearray(raw)) == rle_json(memoryview(raw)) == json.dumps(list(raw))


# --- the Flask encoder ---------------------------------------------------------------------------


def _response(rles: list[bytes], wrap=RLEBytes) -> dict:
    """A /predict-like response with several RLEs at different depths."""
    return {
        "results": [
            {
                "result": [
                    {
                        "from_name": "brush",
                        "to_name": "image",
                        "type": "brushlabels",
                        "original_width": 500,
                        "original_height": 375,
                        "value": {"format": "rle", "rle": wrap(rle), "brushlabels": ["Spatula"]},
                    }
                    for rle in rles[:2]
                ],
                "model_version": "sam2/hiera_t",
                "score": 0.5,
            },
            {"result": [], "score": None},
        ],
        "extra": {"nested": [[wrap(rles[2])], ("tuple", wrap(rles[3]))], "ints": [3, 2, 1]},
        "top": wrap(rles[4]),
        "text": "rle: [1, 2]",
        "unicode": "Spatel \u00e4 \u2713",
    }


def _rles() -> list[bytes]:
    return [bytes(range(256)) + random_bytes(5000), random_bytes(3), b"", bytes([0, 255, 7]), random_bytes(40_000)]


def _expected(rles: list[bytes]) -> dict:
    """The response as json.loads gives it back: every RLE a list of ints, tuples lists."""
    return json.loads(json.dumps(_response(rles, wrap=list)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"separators": COMPACT, "sort_keys": True},  # Flask 1.1 jsonify
        {"separators": COMPACT},
        {},
        {"sort_keys": True},
        {"separators": (", ", ": "), "indent": 2, "sort_keys": True},  # jsonify when pretty printing
        {"indent": 4},
        {"ensure_ascii": False, "separators": COMPACT},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults",
)
def test_encoded_response_loads_back_with_lists_of_ints(kwargs: dict) -> None:
    rles = _rles()
    text = json.dumps(_response(rles), cls=LabelStudioJSONEncoder, **kwargs)
    assert json.loads(text) == _expected(rles)
    assert "rpsam2-rle-" not in text  # no placeholder left behind


@pytest.mark.parametrize("separators", [COMPACT, None])
def test_encoded_response_is_byte_identical_to_encoding_lists(separators) -> None:
    rles = _rles()
    ours = json.dumps(_response(rles), cls=LabelStudioJSONEncoder, separators=separators, sort_keys=True)
    reference = json.dumps(_response(rles, wrap=list), separators=separators, sort_keys=True)
    assert ours == reference


def test_jsonify_in_an_app_writes_the_same_json_as_for_lists() -> None:
    """Same data as Flask's own JSON of plain lists; each RLE as the same compact array text.
    (The app writes UTF-8 where Flask escapes non-ASCII, and no trailing newline: orjson.)"""
    app = Flask(__name__)
    app.json = LabelStudioJSONProvider(app)
    rles = _rles()
    with app.app_context():
        body = jsonify(_response(rles)).get_data(as_text=True)
        plain_app = Flask("plain")
        with plain_app.app_context():
            plain = jsonify(_response(rles, wrap=list)).get_data(as_text=True)
    assert json.loads(body) == json.loads(plain) == _expected(rles)
    for rle in rles:
        assert json.dumps(list(rle), separators=COMPACT) in body


def test_top_level_rle_and_rle_after_a_number_in_a_list() -> None:
    raw = bytes([5, 0, 255])
    assert json.dumps(RLEBytes(raw), cls=LabelStudioJSONEncoder) == "[5, 0, 255]"
    # Lists whose first item is a number are not searched for RLEs; bytes inside still become arrays.
    mixed = [1, RLEBytes(raw), "x", RLEBytes(b"")]
    assert json.loads(json.dumps(mixed, cls=LabelStudioJSONEncoder)) == [1, [5, 0, 255], "x", []]
    assert json.loads(json.dumps(["a", {"rle": RLEBytes(raw)}], cls=LabelStudioJSONEncoder)) == [
        "a",
        {"rle": [5, 0, 255]},
    ]


def test_plain_bytes_and_bytearray_fall_back_to_lists() -> None:
    value = {"a": b"\x00\x01\xff", "b": [bytearray(b"\x02\x03")], "c": b""}
    text = json.dumps(value, cls=LabelStudioJSONEncoder, separators=COMPACT, sort_keys=True)
    assert text == '{"a":[0,1,255],"b":[[2,3]],"c":[]}'
    assert LabelStudioJSONEncoder().default(b"\x09") == [9]


def test_strings_that_look_like_placeholders_are_left_alone() -> None:
    value = {"note": "rpsam2-rle-0", "rle": RLEBytes(b"\x01"), "again": "rpsam2-rle-"}
    assert json.loads(json.dumps(value, cls=LabelStudioJSONEncoder)) == {
        "note": "rpsam2-rle-0",
        "rle": [1],
        "again": "rpsam2-rle-",
    }


def test_flask_defaults_still_apply() -> None:
    assert issubclass(LabelStudioJSONEncoder, json.JSONEncoder)
    provider = LabelStudioJSONProvider(Flask(__name__))
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    when = datetime.datetime(2024, 6, 12, 8, 30, tzinfo=datetime.UTC)
    value = {"id": ident, "when": when, "rle": RLEBytes(b"\x07"), "raw": b"\x01\x02"}
    loaded = json.loads(provider.dumps(value))
    assert loaded == {"id": str(ident), "when": "Wed, 12 Jun 2024 08:30:00 GMT", "rle": [7], "raw": [1, 2]}
    with pytest.raises(TypeError):
        provider.dumps({"x": object()})


@pytest.mark.parametrize("text", ["[NaN]", "[Infinity]", "[-Infinity]", "[1e999]", "[" * 100_000])
def test_the_provider_refuses_json_the_standard_parser_lets_through(text: str) -> None:
    provider = LabelStudioJSONProvider(Flask(__name__))
    with pytest.raises(ValueError):
        provider.loads(text)
    assert provider.loads('{"x": [1.5, -2e3, null]}') == {"x": [1.5, -2000.0, None]}


def test_app_responses_carry_the_same_json_as_the_standard_encoder() -> None:
    app = Flask(__name__)
    app.json = LabelStudioJSONProvider(app)
    rles = _rles()
    value = {**_response(rles), "plain": b"\x00\x09", "when": datetime.datetime(2024, 6, 12, tzinfo=datetime.UTC),
             "id": uuid.UUID("12345678-1234-5678-1234-567812345678")}
    with app.app_context():
        body = jsonify(value).get_data()
    assert json.loads(body) == json.loads(app.json.dumps(value))
    assert json.loads(body)["plain"] == [0, 9] and json.loads(body)["when"] == "Wed, 12 Jun 2024 00:00:00 GMT"
    app.debug = True  # people read it: indented, by the standard encoder
    with app.app_context():
        pretty = jsonify(value).get_data(as_text=True)
    assert "\n  " in pretty and json.loads(pretty) == json.loads(body)
