"""Cached SAM2 image features: everything the mask decoder needs of one (or B) encoded image(s)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageFeatures:
    """Everything the decoder needs of one (or B) encoded image(s)."""

    image_embed: torch.Tensor  # (B, 256, 64, 64), no_mem_embed already added
    high_res_feats: list[torch.Tensor]  # [(B, 32, 256, 256), (B, 64, 128, 128)]
    orig_hw: tuple[int, int]

    @property
    def nbytes(self) -> int:
        tensors = [self.image_embed, *self.high_res_feats]
        return sum(t.element_size() * t.numel() for t in tensors)

    def to(self, device: str | torch.device) -> ImageFeatures:
        return ImageFeatures(
            self.image_embed.to(device), [t.to(device) for t in self.high_res_feats], self.orig_hw
        )

    def repeat(self, n: int) -> ImageFeatures:
        """Repeat along the batch axis (to pair one image with n prompt sets without repeat_image)."""
        return ImageFeatures(
            self.image_embed.repeat_interleave(n, 0),
            [t.repeat_interleave(n, 0) for t in self.high_res_feats],
            self.orig_hw,
        )

    def state(self) -> dict:
        """Plain tensors + size, for torch.save (disk cache) or pickling to another process."""
        return {
            "image_embed": self.image_embed.cpu(),
            "high_res_feats": [t.cpu() for t in self.high_res_feats],
            "orig_hw": tuple(self.orig_hw),
        }

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device = "cpu") -> ImageFeatures:
        return cls(
            state["image_embed"].to(device),
            [t.to(device) for t in state["high_res_feats"]],
            tuple(state["orig_hw"]),
        )


