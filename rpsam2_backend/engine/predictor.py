"""RP-SAM2 inference: the shift block moves the first positive click, frozen SAM2 decodes.

The paper trains and evaluates the shift block on the first click only (§4: shifting later clicks
"will not yield significant boost"), so later clicks and all negative clicks pass as given.
Without a shift block this is plain SAM2 and its version string says so.

A box prompt goes to SAM2 as its two corners (point labels 2 and 3, what ``SAM2ImagePredictor``
does), followed by any clicks; the box already says where the object is, so nothing is shifted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from rpsam2_backend.core.names import version_string
from rpsam2_backend.engine.embedding_cache import EmbeddingCache
from rpsam2_backend.engine.features import ImageFeatures
from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
from rpsam2_backend.engine.sam2_engine import SAM2Engine


@dataclass(frozen=True)
class PixelClick:
    """A click in continuous pixel coordinates of the original image (Label Studio sends percent:
    ``labelstudio.prompts.PercentClick``; the job converts with the size of the image it loaded)."""

    x: float
    y: float
    positive: bool = True


@dataclass
class Segmentation:
    mask: np.ndarray  # bool (H, W)
    score: float  # SAM2's predicted IoU of the returned mask
    refined_point: tuple[float, float] | None  # where the first click was moved to (px), if shifted
    encoded: bool  # True when this call ran the image encoder (cache miss)


class RPSAM2Predictor:
    def __init__(
        self,
        engine: SAM2Engine,
        shift_block: ShiftBlock | None = None,
        cache: EmbeddingCache | None = None,
        shift_version: str = "",
        decoder_version: str = "",
    ) -> None:
        self.engine = engine
        self.cache = cache if cache is not None else EmbeddingCache(0)
        self._lock = threading.Lock()
        self.shift_block: ShiftBlock | None = None
        self.shift_version = ""
        self.decoder_version = decoder_version
        # Counts swaps of the shift block: two blocks may carry one version name (tests, a pinned
        # directory rewritten in place), and remembered masks must not outlive the block.
        self.generation = 0
        self.set_shift_block(shift_block, shift_version)

    # --- versions --------------------------------------------------------------------------
    def set_shift_block(self, block: ShiftBlock | None, version: str = "") -> None:
        """Swap the live shift block (a promotion); in-flight calls keep the one they started with."""
        if block is not None:
            block = block.to(self.engine.device).eval()
            for p in block.parameters():
                p.requires_grad_(False)
        with self._lock:
            self.shift_block, self.shift_version = block, (version or "unversioned") if block else ""
            self.generation += 1

    def set_decoder_version(self, version: str) -> None:
        """Name the decoder weights just swapped in (``DecoderSwapper`` loads them in place)."""
        with self._lock:
            self.decoder_version = version
            self.generation += 1

    @property
    def version(self) -> str:
        return version_string(
            self.engine.config, self.shift_version, self.decoder_version, self.engine.random_weights
        )

    # --- features ----------------------------------------------------------------------------
    def features(self, image: np.ndarray, image_key: str | None = None) -> tuple[ImageFeatures, bool]:
        """Cached image features; ``image_key`` should be the content hash of the image bytes."""
        if image_key is None:
            return self.engine.encode(image), True
        return self.cache.get_or_compute(image_key, lambda: self.engine.encode(image))

    # --- the method ----------------------------------------------------------------------------
    def refine(
        self, features: ImageFeatures, points_px: torch.Tensor, block: ShiftBlock | None = None
    ) -> torch.Tensor:
        """Shift block on (B, 2) pixel points of one image (or B images); returns (B, 2) pixels.

        Differentiable when grad is enabled (the trainer passes its own block)."""
        block = block if block is not None else self.shift_block
        if block is None:
            return points_px
        h, w = features.orig_hw
        size = torch.tensor([w, h], dtype=points_px.dtype, device=points_px.device)
        norm = points_px / size
        ones = torch.ones(points_px.shape[0], 1, dtype=torch.int, device=points_px.device)
        sparse, _ = self.engine.point_embeddings(points_px[:, None, :], ones, features.orig_hw)
        refined = block(norm.to(self.engine.device), sparse[:, 0], features.image_embed)
        # Add the displacement to the given pixels (rather than rescale the normalised point) so
        # that a zero shift returns the click bit-for-bit.
        return points_px + (refined.to(points_px.device) - norm) * size

    @torch.no_grad()
    def segment(
        self,
        image: np.ndarray | None,
        clicks: list[PixelClick],
        image_key: str | None = None,
        features: ImageFeatures | None = None,
        box: tuple[float, float, float, float] | None = None,
    ) -> Segmentation:
        """One mask for one object: its clicks (the first positive one shifted), or a box
        ``(x0, y0, x1, y1)`` in pixels plus any clicks (no shift).  A single click decodes SAM2's
        three masks and keeps the best predicted IoU; anything more decodes one mask."""
        if box is None and not clicks:
            raise ValueError("segment() needs at least one click or a box")
        if box is None and not any(c.positive for c in clicks):
            raise ValueError("segment() needs at least one positive click")
        encoded = False
        if features is None:
            if image is None:
                raise ValueError("segment() needs an image or its features")
            features, encoded = self.features(image, image_key)
        h, w = features.orig_hw
        for c in clicks:
            if not (0 <= c.x <= w and 0 <= c.y <= h):
                raise ValueError(f"click ({c.x:.1f}, {c.y:.1f}) is outside the {w}x{h} image")

        if box is not None and not (0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h):
            raise ValueError(f"box {tuple(round(v, 1) for v in box)} is empty or outside the {w}x{h} image")

        coords = torch.tensor([[c.x, c.y] for c in clicks], dtype=torch.float32).reshape(-1, 2)
        labels = torch.tensor([1 if c.positive else 0 for c in clicks], dtype=torch.int)
        with self._lock:
            block = self.shift_block if box is None else None
        refined_point = None
        if box is not None:
            coords = torch.cat([torch.tensor([[box[0], box[1]], [box[2], box[3]]]), coords])
            labels = torch.cat([torch.tensor([2, 3], dtype=torch.int), labels])
        elif block is not None:
            first = next(i for i, c in enumerate(clicks) if c.positive)
            moved = self.refine(features, coords[first : first + 1].to(self.engine.device), block)
            coords[first] = moved[0].cpu()
            refined_point = (float(coords[first, 0]), float(coords[first, 1]))
        masks, scores = self.engine.decode_masks(
            features, coords[None].to(self.engine.device), labels[None], multimask=box is None and len(clicks) == 1
        )
        return Segmentation(masks[0], float(scores[0]), refined_point, encoded)
