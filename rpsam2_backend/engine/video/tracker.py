"""Masks of one frame, carried through the neighbouring frames by SAM2's video predictor.

``VideoEngine.propagate(frames, seed, masks, forward, backward)`` seeds SAM2's memory bank with
the given masks as mask prompts on frame ``seed``, then tracks every object forward up to
``forward`` frames and, from the seed again, backward up to ``backward`` frames, yielding one
``PropagatedFrame`` per visited frame as soon as it is tracked.

Confidence (per frame and object), from SAM2's own signals:

    confidence = sigmoid(object score) x predicted IoU x min(1, 2 x area ratio)

- *object score*: SAM2's presence logit (<= 0: SAM2 itself says the object is gone and returns
  an empty mask);
- *predicted IoU*: the mask decoder's estimate for the mask it chose (sigmoid, 0..1);
- *area ratio*: min/max of the mask's area here and on the previous frame of the same pass (1 =
  unchanged); a change within a factor 2 costs nothing, a mask that collapses or floods the
  frame drives the confidence to 0.

An object stops being propagated after the frame where it is lost (object score <= 0) or its
confidence falls below ``min_confidence``: that frame still carries it (with its low confidence,
and ``ObjectTrack.stopped`` saying why), later frames of the same pass do not, and their score is
capped at that confidence (``PropagatedFrame.ceiling``): a frame missing an object is no better
than the frame where it was dropped, so sorting by score still shows it.  When every object has
stopped, the pass ends.  The confidence is uncalibrated (no labelled video was available when
it was chosen); it orders frames for review, it does not promise an IoU.

Limits (sam2 1.1.0, documented in README "Label a video"):
- Memory: frames are decoded one at a time (``LazyFrames``), outputs older than the memory
  bank's reach are dropped after every frame (``prune_behind``), so the state is bounded by about
  16 frames x objects (0.77 MiB each at 1024) plus SAM2's weights and one frame's features,
  whatever the video's length.  The yielded masks are the caller's to keep or drop.
- Cost: memory attention runs per object (batch 1), so time grows linearly with the objects.
- Backward is tracked from the seed alone (the forward pass's outputs are forgotten first), so
  it gives the same masks whether or not forward ran.
- The state covers exactly the given frames; SAM2 normalises the object-pointer positions by
  ``min(len(frames), 16)``, so the same frames in a shorter window differ slightly from a longer one.
- One model serves one propagation at a time per process (sam2's RoPE attention rewrites its own
  buffers during a forward pass): ``propagate`` holds the engine's lock while it runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rpsam2_backend.core.errors import BadRequest, ConfigError
from rpsam2_backend.engine.build import load_checkpoint
from rpsam2_backend.engine.video.frames import LazyFrames, check_rgb
from rpsam2_backend.engine.video.predictor import (
    TARGET,
    forget_tracking,
    memory_reach,
    new_state,
    prune_behind,
    track_frame,
)

log = logging.getLogger(__name__)

AREA_FREE_FACTOR = 2.0  # area changes within this factor between frames do not lower the confidence


def confidence(object_score: float, iou: float, area: int, previous_area: int) -> tuple[float, float]:
    """(confidence, area ratio) of one object on one frame (formula in the module docstring)."""
    largest = max(area, previous_area)
    ratio = min(area, previous_area) / largest if largest > 0 else 0.0
    presence = 1.0 / (1.0 + math.exp(-object_score)) if object_score > -60 else 0.0
    area_term = min(1.0, AREA_FREE_FACTOR * ratio)
    return presence * min(max(iou, 0.0), 1.0) * area_term, ratio


@dataclass(frozen=True)
class ObjectTrack:
    mask: np.ndarray  # bool (H, W), the frame's size
    object_score: float  # SAM2's presence logit
    iou: float  # predicted IoU of the chosen mask
    area: int
    area_ratio: float  # vs the previous frame of the pass (the seed for the first one)
    confidence: float
    stopped: str = ""  # why the object is not propagated past this frame ("" = it goes on)


@dataclass(frozen=True)
class PropagatedFrame:
    index: int  # position in the given frames
    distance: int  # frames from the seed: +k forward, -k backward
    objects: dict[Hashable, ObjectTrack] = field(default_factory=dict)
    ceiling: float = 1.0  # lowest confidence of the objects that stopped on this or an earlier frame of the pass

    @property
    def score(self) -> float:
        """The lowest confidence of the frame's objects, and of those it misses because they stopped
        earlier: a frame is as trustworthy as its worst object."""
        if not self.objects:
            return 0.0
        return min(self.ceiling, *(o.confidence for o in self.objects.values()))


class VideoEngine:
    """One SAM2 video predictor (sam2's real memory-bank tracker) on one device."""

    def __init__(self, predictor: torch.nn.Module, config: str, checkpoint: str | None, device: str) -> None:
        self.predictor = predictor
        self.config = config
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.keep = memory_reach(predictor)
        self.frames_tracked = 0  # object-frames tracked by this engine (for benchmarks and logs)
        self._lock = threading.Lock()

    @classmethod
    def build(cls, config: str, checkpoint: str | None, device: str = "cpu", image_size: int = 0) -> VideoEngine:
        """``build_sam2_video_predictor`` of ``config`` with our scored subclass; ``image_size`` 0 keeps
        the config's (1024, what Meta trained); smaller sizes are for tests and smoke runs."""
        from sam2.build_sam import build_sam2_video_predictor

        if image_size and image_size % 64:
            raise ConfigError(f"RPSAM2_PROPAGATE_IMAGE_SIZE={image_size} must be 0 or a multiple of 64")
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise ConfigError(f"SAM2 checkpoint {checkpoint} does not exist")
        overrides = [f"++model._target_={TARGET}"] + ([f"++model.image_size={image_size}"] if image_size else [])
        try:
            # Built on the CPU without a checkpoint, then loaded like the image model (strict,
            # with messages that name the setting) and moved.
            predictor = build_sam2_video_predictor(config, None, device="cpu", hydra_overrides_extra=overrides)
        except Exception as exc:
            raise ConfigError(f"cannot build SAM2's video predictor from RPSAM2_SAM2_CONFIG={config!r}: {exc}") from exc
        if checkpoint is not None:
            load_checkpoint(predictor, config, checkpoint)
        else:
            log.warning("SAM2 video predictor built with RANDOM WEIGHTS: masks are meaningless (tests only)")
        # Hole filling needs sam2's optional CUDA extension (_C), which the sam2 wheel does not
        # ship: upstream skips it with a warning; say so explicitly instead.
        predictor.fill_hole_area = 0
        predictor = predictor.to(device).eval()
        log.info("SAM2 video predictor ready: config=%s image_size=%d device=%s", config, predictor.image_size, device)
        return cls(predictor, config, checkpoint, device)

    @property
    def random_weights(self) -> bool:
        return self.checkpoint is None

    @property
    def image_size(self) -> int:
        return int(self.predictor.image_size)

    def _context(self) -> contextlib.AbstractContextManager:
        # Meta runs the video predictor under bf16 autocast on CUDA (its notebooks, benchmark.py).
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def propagate(
        self,
        frames: Sequence[np.ndarray],
        seed: int,
        masks: Mapping[Hashable, np.ndarray],
        forward: int,
        backward: int = 0,
        min_confidence: float = 0.0,
        offload_state: bool = False,
        offload_video: bool = True,
    ) -> Iterator[PropagatedFrame]:
        """Track ``masks`` (object id -> bool (H, W) on ``frames[seed]``) through ``frames``.

        ``frames[t]`` is an RGB uint8 (H, W, 3) array, read when the tracker gets there (pass a
        sequence that decodes on indexing for long videos).  Yields the forward frames nearest
        first, then the backward ones.  BadRequest for masks or frames it cannot use.
        """
        if not 0 <= seed < len(frames):
            raise BadRequest(f"seed frame {seed} is outside the {len(frames)} given frames")
        if forward < 0 or backward < 0:
            raise BadRequest("forward and backward frame counts must be >= 0")
        if not masks:
            raise BadRequest("no mask to propagate")
        height, width = check_rgb(frames[seed], seed).shape[:2]
        seeds: dict[Hashable, np.ndarray] = {}
        for obj_id, mask in masks.items():
            mask = np.asarray(mask)
            if mask.shape != (height, width):
                raise BadRequest(f"mask of object {obj_id!r} is {mask.shape[1] if mask.ndim == 2 else '?'}x"
                                 f"{mask.shape[0]} ({mask.shape}) but the seed frame is {width}x{height}")
            if not mask.any():
                raise BadRequest(f"mask of object {obj_id!r} is empty: nothing to propagate")
            seeds[obj_id] = mask.astype(bool)
        forward = min(forward, len(frames) - 1 - seed)
        backward = min(backward, seed)
        with self._lock:
            images = LazyFrames(frames, self.image_size, (height, width),
                                device="cpu" if offload_video else self.device)
            state = new_state(self.predictor, images, offload_state)
            with torch.inference_mode(), self._context():
                for obj_id, mask in seeds.items():
                    self.predictor.add_new_mask(state, frame_idx=seed, obj_id=obj_id, mask=mask)
            areas = {obj_id: int(mask.sum()) for obj_id, mask in seeds.items()}
            yield from self._pass(state, seed, forward, +1, areas, min_confidence)
            if backward:
                forget_tracking(state)
                yield from self._pass(state, seed, backward, -1, areas, min_confidence)

    def _pass(
        self, state: dict, seed: int, count: int, direction: int, seed_areas: dict[Hashable, int],
        min_confidence: float,
    ) -> Iterator[PropagatedFrame]:
        reverse = direction < 0
        previous = dict(seed_areas)
        active = list(state["obj_ids"])
        ceiling = 1.0
        with torch.inference_mode(), self._context():
            self.predictor.propagate_in_video_preflight(state)
        for step in range(1, count + 1):
            if not active:
                return
            frame_idx = seed + direction * step
            with torch.inference_mode(), self._context():
                outputs = track_frame(self.predictor, state, frame_idx,
                                      [state["obj_id_to_idx"][o] for o in active], reverse)
                prune_behind(state, frame_idx, self.keep, reverse)
            self.frames_tracked += len(active)
            objects: dict[Hashable, ObjectTrack] = {}
            for obj_id in list(active):
                logits, score, iou = outputs[state["obj_id_to_idx"][obj_id]]
                mask = (logits > 0).cpu().numpy()
                area = int(mask.sum())
                conf, ratio = confidence(score, iou, area, previous[obj_id])
                stopped = ""
                if score <= 0:
                    stopped = f"lost: SAM2's object score {score:.2f} <= 0"
                elif conf < min_confidence:
                    stopped = f"confidence {conf:.3f} < {min_confidence:g}"
                if stopped:
                    active.remove(obj_id)
                    ceiling = min(ceiling, conf)
                objects[obj_id] = ObjectTrack(mask, score, iou, area, ratio, conf, stopped)
                previous[obj_id] = area
            yield PropagatedFrame(frame_idx, direction * step, objects, ceiling)


_shared: dict[tuple[str, str | None, str, int], VideoEngine] = {}
_shared_lock = threading.Lock()


def shared_video_engine(config: str, checkpoint: str | None, device: str, image_size: int = 0) -> VideoEngine:
    """One video predictor per (config, checkpoint, device, size) and process, built on first use:
    a training worker builds it for its first propagation and keeps it (about SAM2's size again)."""
    key = (config, checkpoint, device, image_size)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = VideoEngine.build(config, checkpoint, device, image_size)
        return _shared[key]
