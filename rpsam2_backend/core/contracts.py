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


class SegmentPayload(TypedDict):
    image_url: str
    clicks: list[ClickPayload]
    label_studio: NotRequired[LabelStudioAccess]


class SegmentResult(TypedDict):
    rle: bytes  # Label Studio brush RLE of the mask
    width: int
    height: int
    score: float  # SAM2's predicted IoU of the mask
    area: int
    refined_point: list[float] | None  # where the shift block moved the first click (percent)
    model_version: str
    encoded: bool  # this job ran the image encoder (cache miss)
    seconds: float
    decode_seconds: float  # shift block + SAM2 decoder alone (the rest is overhead)
    worker: NotRequired[str | None]  # added by the RQ dispatcher


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
