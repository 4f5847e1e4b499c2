"""The RP-SAM2 shift block (paper §2.3): move a click to where SAM2 segments the object best.

    p* = p + p_pos,  i* = i + i_pos
    Δp = N x [self-attn(point) -> cross-attn(point -> image) -> FFN]   (eq. 1)
    P' = P + σ(s_x, s_y) · tanh(φ(Δp))                                  (eq. 2)

Choices the paper leaves open (see README "Method notes"):
- Points live in normalised [0, 1] image coordinates (θ=15 of the distance loss assumes it), so
  σ(s) is the largest shift as a fraction of the side.
- "We initialize (s_x, s_y) with 0.1" (§3.2): by default the raw parameter s starts at 0.1, so
  σ(s) ≈ 0.525 (``scale_init_mode="raw"``, the literal reading); ``scale_init_mode="sigma"`` makes
  σ(s) itself 0.1 (at most 10 % of the side at the start), what this code did before.  A
  ``shift_block.json`` written before the option existed (``max_shift``, no mode) loads with its
  old meaning, σ(s) = max_shift.
- A layer is a standard pre-norm transformer decoder layer (d=256, 8 heads, FFN 2048): 1,578,752
  parameters, which matches the paper's per-layer cost ((12.1 M - 5.8 M) / 4 ≈ 1.575 M).  With 6
  layers and a 64x64x256 image positional embedding this is 10.52 M trainable parameters (2 layers:
  4.21 M) against the paper's 12.1 M (5.8 M): about 1.6 M of layer-independent parameters that
  the paper does not describe (README "Method notes").
- φ is initialised small (std 1e-2) so an untrained block barely moves points, yet gradients
  reach every layer from the first step.
- P' is clamped to the image: SAM2 has no meaning for prompts outside it.
- The head after the transformer layers (norm, φ, tanh, σ(s) scaling) always runs in float32 with
  autocast off (``head``), so bf16 training and float32 evaluation shift a point alike.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

WEIGHTS_FILE = "shift_block.safetensors"
CONFIG_FILE = "shift_block.json"


SCALE_INIT_MODES = ("raw", "sigma")


@dataclass(frozen=True)
class ShiftBlockConfig:
    layers: int = 6
    dim: int = 256
    heads: int = 8
    ffn_dim: int = 2048
    image_tokens: int = 64 * 64
    scale_init: float = 0.1  # the paper's "(s_x, s_y) initialised with 0.1"
    scale_init_mode: str = "raw"  # "raw": s = scale_init (σ(s) ≈ 0.525); "sigma": σ(s) = scale_init
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.scale_init_mode not in SCALE_INIT_MODES:
            raise ValueError(f"scale_init_mode must be one of {SCALE_INIT_MODES}, got {self.scale_init_mode!r}")
        if self.scale_init_mode == "sigma" and not 0.0 < self.scale_init < 1.0:
            raise ValueError(f"scale_init is σ(s) with scale_init_mode='sigma': it must be in (0, 1), "
                             f"got {self.scale_init}")

    @property
    def initial_scale_logit(self) -> float:
        """The raw parameter s at initialisation."""
        if self.scale_init_mode == "raw":
            return float(self.scale_init)
        return math.log(self.scale_init / (1.0 - self.scale_init))

    @classmethod
    def from_dict(cls, data: dict) -> ShiftBlockConfig:
        data = dict(data)
        if "max_shift" in data and "scale_init_mode" not in data:
            # Written before scale_init_mode existed: max_shift was σ(s) at initialisation.
            data["scale_init"], data["scale_init_mode"] = data["max_shift"], "sigma"
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class ShiftBlock(nn.Module):
    def __init__(self, config: ShiftBlockConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ShiftBlockConfig()
        self.point_pos = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.image_pos = nn.Parameter(torch.randn(1, config.image_tokens, config.dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(
                d_model=config.dim,
                nhead=config.heads,
                dim_feedforward=config.ffn_dim,
                dropout=config.dropout,
                batch_first=True,
                norm_first=True,
            )
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.phi = nn.Linear(config.dim, 2)
        nn.init.normal_(self.phi.weight, std=1e-2)
        nn.init.zeros_(self.phi.bias)
        self.scale_logit = nn.Parameter(torch.full((2,), config.initial_scale_logit))

    def forward(
        self, points: torch.Tensor, point_embed: torch.Tensor, image_embed: torch.Tensor
    ) -> torch.Tensor:
        """Refine points.

        points: (B, 2) normalised (x, y); point_embed: (B, dim) SAM2 prompt-encoder token of the
        point; image_embed: (B or 1, dim, h, w) SAM2 image embedding.  Returns (B, 2) in [0, 1].
        """
        b = points.shape[0]
        image_tokens = image_embed.flatten(2).transpose(1, 2)  # (B_img, h*w, dim)
        if image_tokens.shape[1] != self.image_pos.shape[1]:
            raise ValueError(
                f"image embedding has {image_tokens.shape[1]} tokens, shift block expects "
                f"{self.image_pos.shape[1]}"
            )
        memory = image_tokens + self.image_pos
        query = point_embed.reshape(b, 1, -1) + self.point_pos
        if memory.shape[0] == 1 and b > 1:
            # Many points on one image: put them in one sequence so the image keys/values are
            # projected once, not b times; a diagonal self-attention mask keeps every point
            # independent (each attends only to itself), which is exactly the per-point result.
            query = query.transpose(0, 1)
            alone = ~torch.eye(b, dtype=torch.bool, device=query.device)
            for layer in self.layers:
                query = layer(query, memory, tgt_mask=alone)
            query = query.transpose(0, 1)
        else:
            for layer in self.layers:
                query = layer(query, memory)
        return self.head(query[:, 0], points)

    def head(self, token: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """norm -> φ -> tanh -> σ(s) scaling -> clamp (eq. 2) of the (B, dim) point tokens, in float32.

        Autocast is switched off here: under bf16 autocast (training on CUDA) φ and tanh would round
        the shift to bf16 (~1-2 px on a 1024 frame) while evaluation runs in float32, so training would
        see other shifts than the ones served."""
        with torch.autocast(token.device.type, enabled=False):
            delta = torch.tanh(self.phi(self.norm(token.float())))
            refined = points.float() + torch.sigmoid(self.scale_logit.float()) * delta
        return refined.clamp(0.0, 1.0)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # --- persistence: safetensors weights + a JSON of hyper-parameters (no pickle) ---------------
    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        meta = {"config": asdict(self.config), "parameters": self.num_parameters(), **(extra or {})}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> ShiftBlock:
        from safetensors.torch import load_file

        directory = Path(directory)
        weights, meta_file = directory / WEIGHTS_FILE, directory / CONFIG_FILE
        if not weights.is_file() or not meta_file.is_file():
            raise FileNotFoundError(
                f"{directory} is not a shift-block checkpoint (expected {WEIGHTS_FILE} and {CONFIG_FILE}; "
                "write one with rpsam2-train)"
            )
        meta = json.loads(meta_file.read_text())
        block = cls(ShiftBlockConfig.from_dict(meta.get("config", {})))
        block.load_state_dict(load_file(str(weights)))
        return block.to(device).eval()

    @staticmethod
    def read_meta(directory: str | Path) -> dict:
        return json.loads((Path(directory) / CONFIG_FILE).read_text())
