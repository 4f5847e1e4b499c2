"""The click jobs: segment a prompt context, pre-encode an image; run inline or by an RQ worker.

Payloads and results are the TypedDicts of ``core.contracts`` (they cross Redis unchanged).
Errors are raised as BackendError; their "[status] message" text survives RQ's failure record.

Clicks of one label may belong to several objects (``labelstudio.objects``): the job replays them,
decoding each object's current mask as needed, and answers the object of the newest click.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from rpsam2_backend.core.contracts import (
    BoxPayload,
    LabelStudioAccess,
    PreencodePayload,
    PreencodeResult,
    SegmentPayload,
    SegmentResult,
)
from rpsam2_backend.core.errors import BadRequest, ImageError
from rpsam2_backend.engine.features import ImageFeatures
from rpsam2_backend.engine.predictor import PixelClick, Segmentation
from rpsam2_backend.jobs.runtime import Runtime, get_runtime
from rpsam2_backend.labelstudio.brush import mask_to_rle_bytes
from rpsam2_backend.labelstudio.images import redact_url
from rpsam2_backend.labelstudio.objects import ClickObjects, group_clicks, near_mask
from rpsam2_backend.labelstudio.polygons import mask_to_polygons

OUTPUTS = ("brush", "polygon")


def _job_features(payload: SegmentPayload | PreencodePayload) -> tuple[Runtime, ImageFeatures, bool, str]:
    """The job's runtime (with any newly promoted version loaded), its image's features, whether
    they were computed now, and the image key."""
    rt = get_runtime()
    rt.refresh_versions()
    url = payload.get("image_url")
    if not url:
        raise BadRequest("job payload has no image_url")
    features, encoded, key = _features(rt, url, payload.get("label_studio"))
    return rt, features, encoded, key


def _features(rt: Runtime, url: str, label_studio: LabelStudioAccess | None) -> tuple[ImageFeatures, bool, str]:
    image, key = rt.load_image(url, label_studio)
    if image is None:
        cached = rt.cache.get(key)
        if cached is not None:
            return cached, False, key
        image = rt.image_loader(label_studio).load(url)  # evicted between the two looks: fetch again
    features, encoded = rt.predictor.features(image.rgb, key)
    return features, encoded, key


def _check_size(payload: SegmentPayload, width: int, height: int) -> None:
    """The editor's natural size of the image must be the loaded one, or every mask is garbled."""
    expected = payload.get("original_width"), payload.get("original_height")
    if None in expected or expected == (width, height):
        return
    raise ImageError(
        f"the editor saw the image {redact_url(payload.get('image_url', ''))!r} as {expected[0]}x{expected[1]} "
        f"pixels (original_width x original_height) but the backend loaded it as {width}x{height}: the file "
        f"behind the URL changed, or a proxy resized it; reload the task (EXIF orientation is applied on "
        f"both sides)",
        status=422,
    )


def _box(payload: SegmentPayload, width: int, height: int) -> tuple[float, float, float, float] | None:
    box: BoxPayload | None = payload.get("box")
    if box is None:
        return None
    try:
        x0, y0, x1, y1 = (float(box[k]) for k in ("x0", "y0", "x1", "y1"))  # type: ignore[literal-required]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"malformed box in job payload: {exc}") from exc
    # Percent -> pixels, clipped: rounding must not push an edge box a hair outside the image.
    return (
        min(max(x0 / 100.0 * width, 0.0), width), min(max(y0 / 100.0 * height, 0.0), height),
        min(max(x1 / 100.0 * width, 0.0), width), min(max(y1 / 100.0 * height, 0.0), height),
    )


def _newest_object(
    decode_clicks: Callable[[tuple[PixelClick, ...]], Segmentation],
    orig_hw: tuple[int, int],
    clicks: list[PixelClick],
    margin_pct: float = 0.0,
) -> tuple[ClickObjects, Segmentation | None]:
    """Group the clicks into objects (each object's mask decoded as the rule needs it) and decode
    the object of the newest click; None when that click is a negative with no object."""
    height, width = orig_hw
    margin_px = margin_pct / 100.0 * float(np.hypot(width, height))
    decoded: dict[tuple[int, ...], Segmentation] = {}

    def decode(indices: tuple[int, ...]) -> Segmentation:
        if indices not in decoded:
            decoded[indices] = decode_clicks(tuple(clicks[i] for i in indices))
        return decoded[indices]

    def inside(indices: tuple[int, ...], k: int) -> bool:
        return near_mask(decode(indices).mask, clicks[k].x, clicks[k].y, margin_px)

    objects = group_clicks([c.positive for c in clicks], inside)
    newest = objects.newest
    return objects, (decode(newest) if newest is not None else None)


def _margin(payload: SegmentPayload) -> float:
    try:
        margin = float(payload.get("object_margin_pct", 0.0))
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"malformed object_margin_pct in job payload: {exc}") from exc
    if not 0.0 <= margin <= 100.0:
        raise BadRequest(f"object_margin_pct must be in [0, 100], got {margin}")
    return margin


def _clicks(payload: SegmentPayload, width: int, height: int, required: bool = True) -> list[PixelClick]:
    clicks = payload.get("clicks", [])
    if not isinstance(clicks, list) or (required and not clicks):
        raise BadRequest("job payload has no clicks")
    try:
        # Label Studio percent -> continuous pixels of the image as it really is.
        return [
            PixelClick(float(c["x"]) / 100.0 * width, float(c["y"]) / 100.0 * height, bool(c.get("positive", True)))
            for c in clicks
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"malformed click in job payload: {exc}") from exc


def segment_job(payload: SegmentPayload) -> SegmentResult:
    """{"image_url", "clicks": [{"x": %, "y": %, "positive"}], "box"?, "output"?} -> the mask of the
    newest click's object (or of the box) as brush RLE bytes or percent polygons."""
    started = time.perf_counter()
    output = payload.get("output", "brush")
    if output not in OUTPUTS:
        raise BadRequest(f"job payload output must be one of {OUTPUTS}, got {output!r}")
    rt, features, encoded, key = _job_features(payload)
    height, width = features.orig_hw
    _check_size(payload, width, height)
    box = _box(payload, width, height)
    clicks = _clicks(payload, width, height, required=box is None)
    decode_started = time.perf_counter()
    decodes = 0
    version = (rt.predictor.version, rt.predictor.generation)

    def decode_clicks(prompt: tuple[PixelClick, ...]) -> Segmentation:
        nonlocal decodes
        found, now = rt.decoded.get_or_decode(
            (key, version, prompt), lambda: rt.predictor.segment(None, list(prompt), features=features))
        decodes += now
        return found

    try:
        if box is not None:
            seg: Segmentation | None = rt.predictor.segment(None, clicks, features=features, box=box)
            objects, object_clicks, decodes = 1, len(clicks), 1
        else:
            grouping, seg = _newest_object(decode_clicks, features.orig_hw, clicks, _margin(payload))
            objects, object_clicks = len(grouping.objects), len(grouping.newest or ())
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    decode_seconds = time.perf_counter() - decode_started
    result: SegmentResult = {
        "rle": None,
        "width": width,
        "height": height,
        "score": 0.0,
        "area": 0,
        "refined_point": None,
        "model_version": rt.predictor.version,
        "encoded": encoded,
        "seconds": 0.0,
        "decode_seconds": decode_seconds,  # shift block + SAM2 decoder alone (the rest is overhead)
        "decodes": decodes,
        "object_found": seg is not None,
        "objects": objects,
        "object_clicks": object_clicks,
    }
    if seg is not None:
        refined = seg.refined_point
        result.update(
            score=seg.score,
            area=int(seg.mask.sum()),
            refined_point=[refined[0] / width * 100.0, refined[1] / height * 100.0] if refined else None,
        )
        if output == "polygon":
            result["polygons"] = mask_to_polygons(seg.mask)
        else:
            result["rle"] = mask_to_rle_bytes(seg.mask)
    result["seconds"] = time.perf_counter() - started
    return result


def preencode_job(payload: PreencodePayload) -> PreencodeResult:
    """Encode a task's image ahead of the first click (Label Studio opened the task)."""
    _, features, encoded, _ = _job_features(payload)
    return {"encoded": encoded, "height": features.orig_hw[0], "width": features.orig_hw[1]}
