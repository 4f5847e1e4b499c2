"""The wire format between the web process and the workers: job payloads and results.

They cross Redis pickled by RQ (or stay in-process inline), so they are plain dicts of JSON-able
values (the brush RLE as ``bytes``); these TypedDicts say which keys each carries.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class LabelStudioAccess(TypedDict):
    """Label Studio's host and token as announced in /setup (used when LABEL_STUDIO_URL is unset)."""

    url: str
    token: str


class ClickPayload(TypedDict):
    x: float  # percent of the image width, 0..100
    y: float  # percent of the image height, 0..100
    positive: bool


class BoxPayload(TypedDict):
    """An axis-aligned box prompt, percent of the image (x0 <= x1, y0 <= y1)."""

    x0: float
    y0: float
    x1: float
    y1: float


class SegmentPayload(TypedDict):
    image_url: str
    clicks: list[ClickPayload]  # every click of the context, in order (may be empty with a box)
    label_studio: NotRequired[LabelStudioAccess]
    box: NotRequired[BoxPayload]  # a box prompt: decoded with all clicks as points, no shift
    # The image size the editor saw: the job refuses (422) an image of another size.
    original_width: NotRequired[int]
    original_height: NotRequired[int]
    output: NotRequired[str]  # "brush" (default: RLE) or "polygon" (percent outlines)
    # How close (percent of the image diagonal) a positive click must be to an object's current
    # mask to refine it rather than start a new object (labelstudio.objects); default 0: inside.
    object_margin_pct: NotRequired[float]


class SegmentResult(TypedDict):
    rle: bytes | None  # Label Studio brush RLE of the mask; None with output "polygon" or no object
    width: int
    height: int
    score: float  # SAM2's predicted IoU of the mask
    area: int
    refined_point: list[float] | None  # where the shift block moved the first click (percent)
    model_version: str
    encoded: bool  # this job ran the image encoder (cache miss)
    seconds: float
    decode_seconds: float  # shift block + SAM2 decoder alone (the rest is overhead)
    decodes: NotRequired[int]  # decoder runs this job needed (earlier prompts' masks are remembered)
    worker: NotRequired[str | None]  # added by the RQ dispatcher
    object_found: NotRequired[bool]  # False: the newest click is a negative with no object (no mask)
    objects: NotRequired[int]  # objects the context's clicks form (labelstudio/objects.py)
    object_clicks: NotRequired[int]  # clicks of the answered object
    polygons: NotRequired[list[list[list[float]]]]  # output "polygon": [[[x %, y %], ...], ...]


class PreencodePayload(TypedDict):
    image_url: str
    label_studio: NotRequired[LabelStudioAccess]


class PreencodeResult(TypedDict):
    encoded: bool
    height: int
    width: int


class RetrainPayload(TypedDict):
    project: str
    reason: str
    label_studio: NotRequired[LabelStudioAccess]


class PropagationPayload(TypedDict):
    """A submitted frame whose masks go to its neighbours; the job reads the task's latest
    annotation from Label Studio when it runs, so a queued job always propagates the newest one."""

    project: str
    task: int
    annotation: NotRequired[int]  # the annotation that triggered it (for logs; the latest one wins)
    reason: str
    label_studio: NotRequired[LabelStudioAccess]


class CacheStats(TypedDict):
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


class RuntimeStats(TypedDict):
    """What a process holding SAM2 says about itself (worker presence, inline /health)."""

    device: str
    config: str
    checkpoint: str
    version: str
    shift_version: str
    decoder_version: str
    encodes: int
    cache: CacheStats
