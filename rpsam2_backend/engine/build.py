"""Build SAM2 from a packaged config and load a checkpoint, failing with a message that names the
setting (hydra's own errors are long and name no setting)."""

from __future__ import annotations

import torch

from rpsam2_backend.core.errors import ConfigError


def load_sam2(config: str, checkpoint: str | None, device: str) -> torch.nn.Module:
    from sam2.build_sam import build_sam2

    try:
        model = build_sam2(config, ckpt_path=None, device="cpu")
    except Exception as exc:  # hydra's errors are long; keep the cause, name the setting
        raise ConfigError(f"cannot build SAM2 from RPSAM2_SAM2_CONFIG={config!r}: {exc}") from exc
    if checkpoint is not None:
        load_checkpoint(model, config, checkpoint)
    return model.to(device).eval()


def load_checkpoint(model: torch.nn.Module, config: str, checkpoint: str) -> None:
    """Meta's SAM2 ``.pt`` (``{"model": state_dict}``) into a model built from ``config``, strictly."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"cannot read SAM2 checkpoint {checkpoint}: {exc}") from exc
    state = state.get("model", state) if isinstance(state, dict) else state
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"SAM2 checkpoint {checkpoint} does not match config {config}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def resolve_device(device: str) -> str:
    """RPSAM2_DEVICE -> a torch device name: "auto" means cuda when there is one."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"RPSAM2_DEVICE={device!r} but CUDA is not available on this machine")
    return device
