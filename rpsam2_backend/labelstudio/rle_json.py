"""Brush RLE in HTTP responses: carried as bytes, written as Label Studio's JSON list of ints.

A click's RLE is tens of thousands of byte values.  As a Python list it costs milliseconds at
every hop (pickled into Redis, unpickled, then ``json.dumps`` at ~80 ns per int); as ``bytes`` it
crosses Redis as one string, and its JSON text comes from a 256-entry lookup table in one numpy
gather.  ``RLEBytes`` marks such a value in a response; ``LabelStudioJSONEncoder`` (a plain
``json.JSONEncoder``: the web layer's Flask JSON provider uses it) writes it as ``[v0,v1,...]``,
exactly what ``json.dumps(list(rle))`` would give.
"""

from __future__ import annotations

import json
import uuid

import numpy as np


class RLEBytes(bytes):
    """Brush RLE bytes that serialise as a JSON array of ints (see the module docstring)."""


def _digit_table() -> np.ndarray:
    """Row v: the ASCII of ``"v,"`` padded with zero bytes to 4 (zero never occurs in the text)."""
    table = np.zeros((256, 4), dtype=np.uint8)
    for value in range(256):
        text = f"{value},".encode()
        table[value, : len(text)] = np.frombuffer(text, dtype=np.uint8)
    return table


_DIGITS = _digit_table()


def rle_json(rle: bytes, separator: str = ", ") -> str:
    """``json.dumps(list(rle), separators=(separator, ...))``, without the list."""
    if not rle:
        return "[]"
    text = _DIGITS[np.frombuffer(rle, dtype=np.uint8)].reshape(-1)
    text = text[text != 0].tobytes()[:-1].decode("ascii")  # drop the padding and the last comma
    return "[" + (text if separator == "," else text.replace(",", separator)) + "]"


def _swap(obj, raw: dict[str, bytes], tag: str):
    """``obj`` with every RLEBytes replaced by a unique placeholder string (recorded in ``raw``)."""
    if isinstance(obj, RLEBytes):
        key = f"{tag}{len(raw)}"
        raw[key] = obj
        return key
    if isinstance(obj, dict):
        return {k: _swap(v, raw, tag) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        # Skip lists of plain numbers (any big list in a response is one): nothing inside to swap.
        if obj and not isinstance(obj[0], dict | list | tuple | bytes):
            return obj
        return [_swap(v, raw, tag) for v in obj]
    return obj


class LabelStudioJSONEncoder(json.JSONEncoder):
    """The standard encoder, plus RLEBytes written as JSON arrays without building a list of ints."""

    def encode(self, o) -> str:
        raw: dict[str, bytes] = {}
        tag = f"rpsam2-rle-{uuid.uuid4().hex}-"  # cannot collide with text in the response
        swapped = _swap(o, raw, tag)
        text = super().encode(swapped)
        for key, value in raw.items():
            text = text.replace(json.dumps(key), rle_json(value, self.item_separator), 1)
        return text

    def default(self, o):
        if isinstance(o, bytes | bytearray):
            return list(o)
        return super().default(o)
