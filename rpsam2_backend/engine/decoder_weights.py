"""SAM2-FT: swap SAM2's mask decoder weights between the released ones and a fine-tuned version."""

from __future__ import annotations

from pathlib import Path

import torch

from rpsam2_backend.engine.sam2_engine import SAM2Engine

DECODER_WEIGHTS_FILE = "mask_decoder.safetensors"


class DecoderSwapper:
    """Swaps SAM2's mask decoder weights between the released ones and a fine-tuned (SAM2-FT) version."""

    def __init__(self, engine: SAM2Engine) -> None:
        self.engine = engine

    def load(self, directory: str | Path | None) -> None:
        from safetensors.torch import load_file

        decoder = self.engine.model.sam_mask_decoder
        if directory is None:
            decoder.load_state_dict(self.engine.base_decoder)
            return
        weights = Path(directory) / DECODER_WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{directory} is not a decoder checkpoint (no {DECODER_WEIGHTS_FILE})")
        decoder.load_state_dict(load_file(str(weights), device=str(self.engine.device)))


def save_decoder(decoder: torch.nn.Module, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()},
        str(directory / DECODER_WEIGHTS_FILE),
    )
    return directory
