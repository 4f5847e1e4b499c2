"""The one settings object, read from the environment.

Every setting is listed in README.md ("Configuration"); keep the two in step.  Values are parsed
once (``get_settings()``), validated with messages that name the variable, and passed down
explicitly, so tests build their own ``Settings`` instead of patching globals.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from rpsam2_backend.errors import ConfigError

# Meta's released file name for each packaged sam2.1 config (what `make checkpoints` fetches).
CHECKPOINT_FOR_CONFIG = {
    "sam2.1_hiera_t": "sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": "sam2.1_hiera_large.pt",
}
CHECKPOINT_HELP = (
    "Download Meta's SAM2.1 checkpoints with `make checkpoints` "
    "(or `deploy/download_checkpoints.sh DIR`), then set RPSAM2_SAM2_CHECKPOINT to the .pt file. "
    "For tests and smoke runs only, RPSAM2_ALLOW_RANDOM_WEIGHTS=1 builds SAM2 with random weights."
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def _number(name: str, raw: str, kind: type, minimum: float) -> float | int:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be >= {minimum}")
    return value


def config_stem(sam2_config: str) -> str:
    """'configs/sam2.1/sam2.1_hiera_l.yaml' -> 'sam2.1_hiera_l'."""
    return Path(sam2_config).name.removesuffix(".yaml")


@dataclass(frozen=True)
class Settings:
    # --- the model --------------------------------------------------------------------------
    sam2_config: str = field(default="configs/sam2.1/sam2.1_hiera_l.yaml", metadata={"env": "RPSAM2_SAM2_CONFIG"})
    sam2_checkpoint: str = field(default="", metadata={"env": "RPSAM2_SAM2_CHECKPOINT"})
    checkpoint_dir: str = field(default="checkpoints", metadata={"env": "RPSAM2_CHECKPOINT_DIR"})
    shift_checkpoint: str = field(default="", metadata={"env": "RPSAM2_SHIFT_CHECKPOINT"})
    decoder_checkpoint: str = field(default="", metadata={"env": "RPSAM2_DECODER_CHECKPOINT"})
    device: str = field(default="auto", metadata={"env": "RPSAM2_DEVICE"})
    allow_random_weights: bool = field(default=False, metadata={"env": "RPSAM2_ALLOW_RANDOM_WEIGHTS"})
    cache_mb: int = field(default=2048, metadata={"env": "RPSAM2_CACHE_MB"})
    model_dir: str = field(default="models", metadata={"env": "MODEL_DIR"})
    # --- Label Studio -----------------------------------------------------------------------
    label_studio_url: str = field(default="", metadata={"env": "LABEL_STUDIO_URL"})
    label_studio_api_key: str = field(default="", metadata={"env": "LABEL_STUDIO_API_KEY"})
    local_files_root: str = field(default="", metadata={"env": "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"})
    upload_dir: str = field(default="", metadata={"env": "RPSAM2_UPLOAD_DIR"})
    max_image_mb: float = field(default=64.0, metadata={"env": "RPSAM2_MAX_IMAGE_MB"})
    max_image_pixels: int = field(default=60_000_000, metadata={"env": "RPSAM2_MAX_IMAGE_PIXELS"})
    fetch_timeout: float = field(default=10.0, metadata={"env": "RPSAM2_FETCH_TIMEOUT"})
    basic_auth_user: str = field(default="", metadata={"env": "BASIC_AUTH_USER"})
    basic_auth_pass: str = field(default="", metadata={"env": "BASIC_AUTH_PASS"})
    # --- queues -----------------------------------------------------------------------------
    redis_url: str = field(default="", metadata={"env": "REDIS_URL"})
    predict_timeout: float = field(default=10.0, metadata={"env": "RPSAM2_PREDICT_TIMEOUT"})
    click_queue: str = field(default="rpsam2-click", metadata={"env": "RPSAM2_CLICK_QUEUE"})
    train_queue: str = field(default="rpsam2-train", metadata={"env": "RPSAM2_TRAIN_QUEUE"})
    worker_queues: str = field(default="click", metadata={"env": "RPSAM2_WORKER_QUEUES"})
    job_timeout: int = field(default=120, metadata={"env": "RPSAM2_JOB_TIMEOUT"})
    result_ttl: int = field(default=300, metadata={"env": "RPSAM2_RESULT_TTL"})
    failure_ttl: int = field(default=86400, metadata={"env": "RPSAM2_FAILURE_TTL"})
    redis_timeout: float = field(default=2.0, metadata={"env": "RPSAM2_REDIS_TIMEOUT"})
    worker_heartbeat: float = field(default=2.0, metadata={"env": "RPSAM2_WORKER_HEARTBEAT"})
    # --- the learning loop ------------------------------------------------------------------
    retrain_every: int = field(default=20, metadata={"env": "RPSAM2_RETRAIN_EVERY"})
    retrain_interval: int = field(default=0, metadata={"env": "RPSAM2_RETRAIN_INTERVAL"})
    retrain_timeout: int = field(default=6 * 3600, metadata={"env": "RPSAM2_RETRAIN_TIMEOUT"})
    retrain_min_labels: int = field(default=4, metadata={"env": "RPSAM2_RETRAIN_MIN_LABELS"})
    retrain_val_fraction: float = field(default=0.2, metadata={"env": "RPSAM2_RETRAIN_VAL_FRACTION"})
    retrain_steps: int = field(default=200, metadata={"env": "RPSAM2_RETRAIN_STEPS"})
    retrain_seeds: int = field(default=5, metadata={"env": "RPSAM2_RETRAIN_SEEDS"})
    retrain_min_gain: float = field(default=0.0, metadata={"env": "RPSAM2_RETRAIN_MIN_GAIN", "min": -1.0})
    retrain_std_tolerance: float = field(default=0.01, metadata={"env": "RPSAM2_RETRAIN_STD_TOLERANCE"})
    decoder_ft_steps: int = field(default=100, metadata={"env": "RPSAM2_DECODER_FT_STEPS"})
    pseudo_batch: int = field(default=50, metadata={"env": "RPSAM2_PSEUDO_BATCH"})

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            name = f.metadata["env"]
            if name not in env:
                continue
            raw = env[name]
            if f.type == "bool":
                values[f.name] = _bool(name, raw)
            elif f.type == "int":
                values[f.name] = int(_number(name, raw, int, 0))
            elif f.type == "float":
                values[f.name] = float(_number(name, raw, float, f.metadata.get("min", 0)))
            else:
                values[f.name] = raw.strip()
        if "label_studio_url" not in values and env.get("LABEL_STUDIO_HOST"):
            values["label_studio_url"] = env["LABEL_STUDIO_HOST"].strip()
        return cls(**values)

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)

    @property
    def inline(self) -> bool:
        """No Redis configured: jobs run in this process (the embedded default)."""
        return not self.redis_url

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"RPSAM2_DEVICE={self.device!r} but CUDA is not available on this machine")
        return self.device

    def resolved_checkpoint(self) -> str | None:
        """The SAM2 checkpoint to load, or None for random weights (only when allowed).

        Raises ConfigError with the download command when no checkpoint is there.
        """
        stem = config_stem(self.sam2_config)
        if self.sam2_checkpoint:
            path = Path(self.sam2_checkpoint)
        elif stem in CHECKPOINT_FOR_CONFIG:
            path = Path(self.checkpoint_dir) / CHECKPOINT_FOR_CONFIG[stem]
        else:
            path = None
        if path is not None and path.is_file():
            return str(path)
        if self.allow_random_weights:
            return None
        where = f"{path}" if path else f"(no default file name for config {stem!r})"
        raise ConfigError(
            f"No SAM2 checkpoint found at {where} (RPSAM2_SAM2_CHECKPOINT / RPSAM2_CHECKPOINT_DIR). "
            + CHECKPOINT_HELP
        )

    def public(self) -> dict:
        """Settings safe to log or show in /health: secrets masked."""
        secret = {"label_studio_api_key", "basic_auth_pass"}
        return {
            f.name: ("***" if f.name in secret and getattr(self, f.name) else getattr(self, f.name))
            for f in fields(self)
        }


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
