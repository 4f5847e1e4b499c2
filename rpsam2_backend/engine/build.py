"""Build SAM2 from a packaged config (or a config file) and load a checkpoint, failing with a
message that names the setting (hydra's own errors are long and name no setting)."""

from __future__ import annotations

from pathlib import Path

import torch

from rpsam2_backend.core.errors import ConfigError

# What sam2.build_sam.build_sam2 adds to every config (its apply_postprocessing=True).
_POSTPROCESSING = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}


def _build_from_file(path: Path) -> torch.nn.Module:
    """A SAM2-architecture config outside the sam2 package (e.g. MedSAM2's ``sam2.1_hiera_t512.yaml``),
    built the way ``build_sam2`` builds packaged ones."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    for key, value in _POSTPROCESSING.items():
        OmegaConf.update(cfg, f"model.sam_mask_decoder_extra_args.{key}", value, force_add=True)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def load_sam2(config: str, checkpoint: str | None, device: str) -> torch.nn.Module:
    from sam2.build_sam import build_sam2

    try:
        if config.endswith((".yaml", ".yml")) and Path(config).is_file():
            model = _build_from_file(Path(config))
        else:
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
