"""Frozen SAM2, split into the three calls the method needs: encode once, prompt, decode in batches.

``SAM2ImagePredictor`` keeps one image as hidden state and wraps decoding in ``no_grad``; the
backend caches features of many images and the trainer needs gradients through the prompt
encoder, so we call SAM2's modules directly (the same steps ``set_image``/``_predict`` take).

Coordinates are continuous pixel coordinates of the original image: pixel (row r, col c) covers
[c, c+1) x [r, r+1); Label Studio's percent x maps to x/100*W.  SAM2 sees them as (x/W, y/H)*1024
because its transform resizes to a square without keeping the aspect ratio.  SAM2's prompt
encoder adds 0.5 to every point ("shift to center of pixel", for integer pixel indices); our
coordinates are continuous already, so ``to_model_frame`` takes that 0.5 off again and the
positional encoding sees exactly (x/W, y/H): a click at a pixel centre is shifted once, not twice.

Precision: the prompt encoder's point embeddings (coords @ a Gaussian matrix, then sin/cos of
2π times that) run in float32 even inside a bf16 autocast region: in bf16 the products lose
their fractional part at |2π·coords·B| of a few hundred, and training under autocast would see
other point embeddings than fp32 evaluation.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rpsam2_backend.core.errors import ConfigError
from rpsam2_backend.engine.build import load_sam2
from rpsam2_backend.engine.features import ImageFeatures

log = logging.getLogger(__name__)


def feature_sizes(image_size: int) -> list[tuple[int, int]]:
    """Backbone feature map sizes (strides 4, 8, 16): [(256,256), (128,128), (64,64)] for 1024,
    what SAM2ImagePredictor hard-codes; 512-pixel models (MedSAM2, SurgSAM2) get half of that."""
    return [(image_size // s, image_size // s) for s in (4, 8, 16)]


class SAM2Engine:
    """One frozen SAM2 model on one device; counts encoder calls so tests and /metrics can see caching."""

    def __init__(self, model: torch.nn.Module, config: str, checkpoint: str | None, device: str) -> None:
        from sam2.utils.transforms import SAM2Transforms

        self.model = model
        self.config = config
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.image_size = int(model.image_size)
        self._feat_sizes = feature_sizes(self.image_size)
        self._transforms = SAM2Transforms(resolution=self.image_size, mask_threshold=0.0)
        self.encode_count = 0
        self._dense_pe: torch.Tensor | None = None
        # Prompts per decoder call in decode_masks.  Every prompt repeats the decoder's work on its
        # own copy of the 64x64x256 image tokens: a GPU runs them in parallel, but on a CPU large
        # batches only stream more memory (measured on 2 cores, 64 prompts of hiera_t: 4.3 s in
        # chunks of 2, 5.0 s one by one, 7.2 s in one call).
        self.decode_chunk = 64 if self.device.type == "cuda" else 2
        for p in self.model.parameters():
            p.requires_grad_(False)
        # The decoder this engine was built with (the released one), whatever SAM2-FT version gets
        # swapped in later: what DecoderSwapper.load(None) restores.
        self.base_decoder = {k: v.detach().clone() for k, v in model.sam_mask_decoder.state_dict().items()}

    @classmethod
    def build(cls, config: str, checkpoint: str | None, device: str = "cpu") -> SAM2Engine:
        if checkpoint is None:
            log.warning(
                "SAM2 built with RANDOM WEIGHTS (RPSAM2_ALLOW_RANDOM_WEIGHTS=1): masks are meaningless; "
                "for tests and smoke runs only"
            )
        elif not Path(checkpoint).is_file():
            raise ConfigError(f"SAM2 checkpoint {checkpoint} does not exist")
        model = load_sam2(config, checkpoint, device)
        log.info("SAM2 ready: config=%s checkpoint=%s device=%s", config, checkpoint, device)
        return cls(model, config, checkpoint, device)

    @property
    def random_weights(self) -> bool:
        return self.checkpoint is None

    # ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, image: np.ndarray) -> ImageFeatures:
        """Run the image encoder once. ``image``: RGB uint8 HxWx3."""
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"expected an RGB image HxWx3, got shape {image.shape}")
        orig_hw = (int(image.shape[0]), int(image.shape[1]))
        batch = self._transforms(image)[None].to(self.device)
        return self._encode_tensor(batch, orig_hw)

    @torch.no_grad()
    def encode_batch(self, images: list[np.ndarray]) -> ImageFeatures:
        """Encode images of one size in ONE encoder call: features with B = len(images) rows."""
        if not images:
            raise ValueError("encode_batch needs at least one image")
        sizes = {tuple(int(v) for v in im.shape) for im in images}
        if len(sizes) != 1:
            raise ValueError(f"encode_batch needs images of one size, got {sorted(sizes)}")
        (shape,) = sizes
        if len(shape) != 3 or shape[2] != 3 or shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"expected RGB images HxWx3, got shape {shape}")
        batch = torch.stack([self._transforms(im) for im in images]).to(self.device)
        return self._encode_tensor(batch, (shape[0], shape[1]))

    def _encode_tensor(self, batch: torch.Tensor, orig_hw: tuple[int, int]) -> ImageFeatures:
        self.encode_count += batch.shape[0]
        backbone_out = self.model.forward_image(batch)
        _, vision_feats, _, _ = self.model._prepare_backbone_features(backbone_out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        b = batch.shape[0]
        feats = [
            feat.permute(1, 2, 0).reshape(b, -1, *size)
            for feat, size in zip(vision_feats[::-1], self._feat_sizes[::-1], strict=True)
        ][::-1]
        return ImageFeatures(feats[-1], feats[:-1], orig_hw)

    # ---------------------------------------------------------------------------------------
    def to_model_frame(self, coords_px: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
        """Continuous pixels of the original image -> what SAM2's prompt encoder takes: the
        ``image_size`` square frame minus the 0.5 the encoder adds back (module docstring)."""
        h, w = orig_hw
        scale = torch.tensor([self.image_size / w, self.image_size / h], device=coords_px.device)
        return coords_px.float() * scale - 0.5

    def sam2_predictor_coords(self, coords_px: np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
        """The pixel coordinates to give ``SAM2ImagePredictor`` (which treats them as pixel
        indices and adds the half pixel) so that it encodes exactly the points we encode."""
        h, w = orig_hw
        return np.asarray(coords_px, dtype=np.float64) - 0.5 * np.array([w, h]) / self.image_size

    def point_embeddings(
        self, coords_px: torch.Tensor, labels: torch.Tensor, orig_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM2 prompt encoder on points (B,N,2) px -> sparse (B,N+1,256), dense embeddings; float32
        under autocast too (module docstring)."""
        coords = self.to_model_frame(coords_px.to(self.device), orig_hw)
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.model.sam_prompt_encoder(
                points=(coords.float(), labels.to(self.device, torch.int)), boxes=None, masks=None
            )

    def decode_logits(
        self,
        features: ImageFeatures,
        coords_px: torch.Tensor,
        labels: torch.Tensor,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompt sets in ONE decoder call; differentiable w.r.t. ``coords_px``.

        ``features`` holds either one image (shared by all B prompt sets) or B images.
        Returns low-res logits (B, C, 256, 256) and predicted IoU (B, C); C = 3 if multimask else 1.
        """
        if coords_px.ndim != 3 or coords_px.shape[-1] != 2:
            raise ValueError(f"coords must be (B, N, 2), got {tuple(coords_px.shape)}")
        b_img = features.image_embed.shape[0]
        b = coords_px.shape[0]
        if b_img not in (1, b):
            raise ValueError(f"features hold {b_img} images but {b} prompt sets were given")
        sparse, dense = self.point_embeddings(coords_px, labels, features.orig_hw)
        low_res, iou, _, _ = self.model.sam_mask_decoder(
            image_embeddings=features.image_embed,
            image_pe=self.dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=b_img == 1 and b > 1,
            high_res_features=features.high_res_feats,
        )
        return low_res, iou

    def dense_pe(self) -> torch.Tensor:
        """SAM2's positional encoding of the 64x64 image grid: a constant of the frozen prompt
        encoder that SAM2 recomputes for every decode (~1 ms on a CPU); computed once here."""
        if self._dense_pe is None:
            # A normal tensor even when first asked inside decode_masks' inference mode: an
            # inference tensor could not take part in a training step's autograd graph later.
            # float32 like the point embeddings, even when first asked under autocast.
            with torch.inference_mode(False), torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                self._dense_pe = self.model.sam_prompt_encoder.get_dense_pe()
        return self._dense_pe

    @staticmethod
    def upsample(low_res_logits: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(low_res_logits, size=orig_hw, mode="bilinear", align_corners=False)

    @torch.inference_mode()  # results leave as numpy: no autograd bookkeeping (version counters) at all
    def decode_masks(
        self,
        features: ImageFeatures,
        coords_px: torch.Tensor,
        labels: torch.Tensor,
        multimask: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Binary masks (B, H, W) at the original size and their predicted IoU (B,).

        With ``multimask`` the mask with the best predicted IoU is kept (SAM's rule for one click).
        Only the kept channel is upsampled: upsampling is most of the cost for big images.
        """
        b = coords_px.shape[0]
        if b > self.decode_chunk and features.image_embed.shape[0] == 1:
            parts = [
                self.decode_masks(features, coords_px[i : i + self.decode_chunk], labels[i : i + self.decode_chunk],
                                  multimask)
                for i in range(0, b, self.decode_chunk)
            ]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        low_res, iou = self.decode_logits(features, coords_px, labels, multimask)
        best = iou.argmax(dim=1)
        rows = torch.arange(low_res.shape[0], device=low_res.device)
        chosen = low_res[rows, best][:, None]
        masks = self.upsample(chosen, features.orig_hw)[:, 0] > 0
        return masks.cpu().numpy(), iou[rows, best].float().cpu().numpy()


_shared: dict[tuple[str, str | None, str], SAM2Engine] = {}
_shared_lock = threading.Lock()


def shared_engine(config: str, checkpoint: str | None, device: str) -> SAM2Engine:
    """One frozen SAM2 per (config, checkpoint, device) and process: the click runtime and a
    retrain running in the same training worker share it instead of loading SAM2 twice."""
    key = (config, checkpoint, device)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SAM2Engine.build(config, checkpoint, device)
        return _shared[key]
