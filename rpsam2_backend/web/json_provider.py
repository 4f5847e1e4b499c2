"""Flask's JSON for this app: brush RLE bytes written fast, and a parser that refuses what the
standard one lets through to a 500 (nesting deep enough to exhaust the stack) or into answers
that are not JSON (NaN and Infinity).

Responses are written by orjson (a click's RLE is tens of thousands of byte values: as a numpy
array orjson writes them ~5x faster than the standard encoder's lookup-table path); ``dumps``
keeps the standard encoder, whose text is byte-identical to ``json.dumps`` of plain lists."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider

from rpsam2_backend.labelstudio.rle_json import LabelStudioJSONEncoder


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


_ORJSON = (orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
           | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)


def _orjson_default(o: Any) -> Any:
    if isinstance(o, bytes | bytearray):
        return np.frombuffer(o, dtype=np.uint8)
    return DefaultJSONProvider.default(o)


class LabelStudioJSONProvider(DefaultJSONProvider):
    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, bytes | bytearray):
            return list(o)
        return DefaultJSONProvider.default(o)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return json.dumps(obj, cls=LabelStudioJSONEncoder, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if self._app.debug:  # pretty-printed, for people reading it
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(orjson.dumps(obj, default=_orjson_default, option=_ORJSON),
                                        mimetype=self.mimetype)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_constant", _no_constant)
        kwargs.setdefault("parse_float", _finite)
        try:
            return json.loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON is nested too deeply") from None
