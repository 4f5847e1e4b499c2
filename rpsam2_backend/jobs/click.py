"""The click jobs: segment a click context, pre-encode an image; run inline or by an RQ worker.

Payloads and results are the TypedDicts of ``core.contracts`` (they cross Redis unchanged).
Errors are raised as BackendError; their "[status] message" text survives RQ's failure record.
"""

from __future__ import annotations

import time

from rpsam2_backend.core.contracts import (
    LabelStudioAccess,
    PreencodePayload,
    PreencodeResult,
    SegmentPayload,
    SegmentResult,
)
from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.engine.features import ImageFeatures
from rpsam2_backend.engine.predictor import PixelClick
from rpsam2_backend.jobs.runtime import Runtime, get_runtime
from rpsam2_backend.labelstudio.brush import mask_to_rle_bytes


def _job_features(payload: SegmentPayload | PreencodePayload) -> tuple[Runtime, ImageFeatures, bool]:
    """The job's runtime (with any newly promoted version loaded) and its image's features."""
    rt = get_runtime()
    rt.refresh_versions()
    url = payload.get("image_url")
    if not url:
        raise BadRequest("job payload has no image_url")
    features, encoded = _features(rt, url, payload.get("label_studio"))
    return rt, features, encoded


def _features(rt: Runtime, url: str, label_studio: LabelStudioAccess | None) -> tuple[ImageFeatures, bool]:
    image, key = rt.load_image(url, label_studio)
    if image is None:
        cached = rt.cache.get(key)
        if cached is not None:
            return cached, False
        image = rt.image_loader(label_studio).load(url)  # evicted between the two looks: fetch again
    return rt.predictor.features(image.rgb, key)


def _clicks(payload: SegmentPayload, width: int, height: int) -> list[PixelClick]:
    clicks = payload.get("clicks")
    if not isinstance(clicks, list) or not clicks:
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
    """{"image_url", "clicks": [{"x": %, "y": %, "positive"}]} -> brush RLE of the mask (as bytes)."""
    started = time.perf_counter()
    rt, features, encoded = _job_features(payload)
    height, width = features.orig_hw
    clicks = _clicks(payload, width, height)
    decode_started = time.perf_counter()
    try:
        seg = rt.predictor.segment(None, clicks, features=features)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    decode_seconds = time.perf_counter() - decode_started
    refined = seg.refined_point
    return {
        "rle": mask_to_rle_bytes(seg.mask),
        "width": width,
        "height": height,
        "score": seg.score,
        "area": int(seg.mask.sum()),
        "refined_point": [refined[0] / width * 100.0, refined[1] / height * 100.0] if refined else None,
        "model_version": rt.predictor.version,
        "encoded": encoded,
        "seconds": time.perf_counter() - started,
        "decode_seconds": decode_seconds,  # shift block + SAM2 decoder alone (the rest is overhead)
    }


def preencode_job(payload: PreencodePayload) -> PreencodeResult:
    """Encode a task's image ahead of the first click (Label Studio opened the task)."""
    _, features, encoded = _job_features(payload)
    return {"encoded": encoded, "height": features.orig_hw[0], "width": features.orig_hw[1]}
