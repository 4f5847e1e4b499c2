"""The one settings object, read from the environment.

Every setting is listed in README.md ("Configuration") and deploy/.env.example; a test keeps the
three in step.  Settings are grouped into sections (``settings.queue.redis_url``) but keep their
flat environment names.  Values are parsed once (``get_settings()``) by each field's real type,
checked against the field's ``min``/``max``, and passed down explicitly: tests build their own
``Settings.from_env({...})`` instead of patching globals.
"""

from __future__ import annotations

import functools
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rpsam2_backend.core.errors import ConfigError
from rpsam2_backend.core.names import CHECKPOINT_FOR_CONFIG, config_stem

CHECKPOINT_HELP = (
    "Download Meta's SAM2.1 checkpoints with `make checkpoints` "
    "(or `deploy/download_checkpoints.sh DIR`), then set RPSAM2_SAM2_CHECKPOINT to the .pt file. "
    "For tests and smoke runs only, RPSAM2_ALLOW_RANDOM_WEIGHTS=1 builds SAM2 with random weights."
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env(name: str, default: Any, *, min: float | None = 0, max: float | None = None, secret: bool = False) -> Any:
    """A setting: its environment variable, default and bounds (numbers are >= 0 unless told)."""
    return field(default=default, metadata={"env": name, "min": min, "max": max, "secret": secret})


@dataclass(frozen=True)
class ModelSettings:
    sam2_config: str = env("RPSAM2_SAM2_CONFIG", "configs/sam2.1/sam2.1_hiera_l.yaml")
    sam2_checkpoint: str = env("RPSAM2_SAM2_CHECKPOINT", "")
    checkpoint_dir: str = env("RPSAM2_CHECKPOINT_DIR", "checkpoints")
    shift_checkpoint: str = env("RPSAM2_SHIFT_CHECKPOINT", "")
    decoder_checkpoint: str = env("RPSAM2_DECODER_CHECKPOINT", "")
    device: str = env("RPSAM2_DEVICE", "auto")
    allow_random_weights: bool = env("RPSAM2_ALLOW_RANDOM_WEIGHTS", False)
    cache_mb: int = env("RPSAM2_CACHE_MB", 2048)
    model_dir: str = env("MODEL_DIR", "models")


@dataclass(frozen=True)
class LabelStudioSettings:
    url: str = env("LABEL_STUDIO_URL", "")
    api_key: str = env("LABEL_STUDIO_API_KEY", "", secret=True)
    local_files_root: str = env("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "")
    upload_dir: str = env("RPSAM2_UPLOAD_DIR", "")


@dataclass(frozen=True)
class ImageSettings:
    max_mb: float = env("RPSAM2_MAX_IMAGE_MB", 64.0)
    max_pixels: int = env("RPSAM2_MAX_IMAGE_PIXELS", 60_000_000, min=1)
    fetch_timeout: float = env("RPSAM2_FETCH_TIMEOUT", 10.0, min=0.1)
    # Comma-separated host[:port] or CIDR; empty = public addresses only (the LS host is always allowed).
    allowed_hosts: str = env("RPSAM2_ALLOWED_IMAGE_HOSTS", "")


@dataclass(frozen=True)
class WebSettings:
    basic_auth_user: str = env("BASIC_AUTH_USER", "")
    basic_auth_pass: str = env("BASIC_AUTH_PASS", "", secret=True)
    max_request_mb: float = env("RPSAM2_MAX_REQUEST_MB", 16.0, min=0.001)
    max_clicks: int = env("RPSAM2_MAX_CLICKS", 64, min=1)
    # Answer a click with a display-only keypoint where the shift block moved it (web/model.py).
    show_refined_point: bool = env("RPSAM2_SHOW_REFINED_POINT", True)
    # A positive click this close to an object's current mask (percent of the image diagonal)
    # refines that object (a missed tip, a cut undone); farther away it starts a new object.
    object_margin_pct: float = env("RPSAM2_OBJECT_MARGIN_PCT", 3.0, max=100)


@dataclass(frozen=True)
class QueueSettings:
    redis_url: str = env("REDIS_URL", "")
    predict_timeout: float = env("RPSAM2_PREDICT_TIMEOUT", 10.0, min=0.1)
    click_queue: str = env("RPSAM2_CLICK_QUEUE", "rpsam2-click")
    train_queue: str = env("RPSAM2_TRAIN_QUEUE", "rpsam2-train")
    worker_queues: str = env("RPSAM2_WORKER_QUEUES", "click")
    job_timeout: int = env("RPSAM2_JOB_TIMEOUT", 120, min=1)
    # The web process reads each result once: at least a second, or it could expire unread.
    result_ttl: int = env("RPSAM2_RESULT_TTL", 300, min=1)
    failure_ttl: int = env("RPSAM2_FAILURE_TTL", 86400)
    redis_timeout: float = env("RPSAM2_REDIS_TIMEOUT", 2.0)
    worker_heartbeat: float = env("RPSAM2_WORKER_HEARTBEAT", 2.0, min=0.1)


@dataclass(frozen=True)
class LearningSettings:
    retrain_every: int = env("RPSAM2_RETRAIN_EVERY", 20)
    retrain_interval: int = env("RPSAM2_RETRAIN_INTERVAL", 0)
    retrain_timeout: int = env("RPSAM2_RETRAIN_TIMEOUT", 6 * 3600, min=1)
    retrain_result_ttl: int = env("RPSAM2_RETRAIN_RESULT_TTL", 86400, min=1)
    retrain_min_labels: int = env("RPSAM2_RETRAIN_MIN_LABELS", 4, min=1)
    retrain_val_fraction: float = env("RPSAM2_RETRAIN_VAL_FRACTION", 0.2, max=0.9)
    retrain_steps: int = env("RPSAM2_RETRAIN_STEPS", 200, min=1)
    retrain_seeds: int = env("RPSAM2_RETRAIN_SEEDS", 5, min=1)
    retrain_min_gain: float = env("RPSAM2_RETRAIN_MIN_GAIN", 0.0, min=-1.0, max=1.0)
    retrain_std_tolerance: float = env("RPSAM2_RETRAIN_STD_TOLERANCE", 0.01)
    decoder_ft_steps: int = env("RPSAM2_DECODER_FT_STEPS", 100)
    pseudo_batch: int = env("RPSAM2_PSEUDO_BATCH", 50, min=1)
    # Video: a submitted frame's masks propagate to its neighbours (trainer/video, engine/video).
    propagate_frames: int = env("RPSAM2_PROPAGATE_FRAMES", 0, max=100_000)
    propagate_backward: bool = env("RPSAM2_PROPAGATE_BACKWARD", False)
    propagate_min_confidence: float = env("RPSAM2_PROPAGATE_MIN_CONFIDENCE", 0.3, max=1.0)
    propagate_offload_state: bool = env("RPSAM2_PROPAGATE_OFFLOAD_STATE", False)
    propagate_image_size: int = env("RPSAM2_PROPAGATE_IMAGE_SIZE", 0, max=4096)
    propagate_timeout: int = env("RPSAM2_PROPAGATE_TIMEOUT", 3600, min=1)
    video_key: str = env("RPSAM2_VIDEO_KEY", "video")
    frame_key: str = env("RPSAM2_FRAME_KEY", "frame")


SECTIONS = {
    "model": ModelSettings,
    "label_studio": LabelStudioSettings,
    "images": ImageSettings,
    "web": WebSettings,
    "queue": QueueSettings,
    "learning": LearningSettings,
}


def _parse(name: str, raw: str, kind: type, lo: float | None, hi: float | None) -> Any:
    if kind is bool:
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")
    if kind is str:
        return raw.strip()
    try:
        number = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    if number != number:  # NaN passes every comparison
        raise ConfigError(f"{name}={raw!r} is not a number")
    if lo is not None and number < lo:
        raise ConfigError(f"{name}={raw!r} must be >= {lo:g}")
    if hi is not None and number > hi:
        raise ConfigError(f"{name}={raw!r} must be <= {hi:g}")
    return number


def _section_from_env(cls: type, env_map: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        name = f.metadata["env"]
        if name in env_map:
            values[f.name] = _parse(name, env_map[name], hints[f.name], f.metadata["min"], f.metadata["max"])
    return cls(**values)


@dataclass(frozen=True)
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    label_studio: LabelStudioSettings = field(default_factory=LabelStudioSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    web: WebSettings = field(default_factory=WebSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    learning: LearningSettings = field(default_factory=LearningSettings)

    @classmethod
    def from_env(cls, env_map: Mapping[str, str] | None = None) -> Settings:
        env_map = dict(os.environ if env_map is None else env_map)
        if "LABEL_STUDIO_URL" not in env_map and env_map.get("LABEL_STUDIO_HOST"):
            env_map["LABEL_STUDIO_URL"] = env_map["LABEL_STUDIO_HOST"]
        return cls(**{name: _section_from_env(section, env_map) for name, section in SECTIONS.items()})

    def with_(self, section: str, **changes: Any) -> Settings:
        """A copy with some fields of one section changed: ``settings.with_("queue", redis_url=...)``."""
        return replace(self, **{section: replace(getattr(self, section), **changes)})

    @staticmethod
    def env_names() -> dict[str, tuple[str, str]]:
        """Environment variable -> (section, field), for documentation checks."""
        return {f.metadata["env"]: (s, f.name) for s, cls in SECTIONS.items() for f in fields(cls)}

    @property
    def inline(self) -> bool:
        """No Redis configured: jobs run in this process (the embedded default)."""
        return not self.queue.redis_url

    def checkpoint_path(self) -> Path | None:
        """Where the SAM2 checkpoint should be: RPSAM2_SAM2_CHECKPOINT, else Meta's file name for
        the config under RPSAM2_CHECKPOINT_DIR (None for a config without a released checkpoint)."""
        model = self.model
        if model.sam2_checkpoint:
            return Path(model.sam2_checkpoint)
        stem = config_stem(model.sam2_config)
        return Path(model.checkpoint_dir) / CHECKPOINT_FOR_CONFIG[stem] if stem in CHECKPOINT_FOR_CONFIG else None

    def resolved_checkpoint(self) -> str | None:
        """The SAM2 checkpoint to load, or None for random weights (only when allowed).

        Raises ConfigError with the download command when no checkpoint is there.
        """
        model = self.model
        path = self.checkpoint_path()
        stem = config_stem(model.sam2_config)
        if path is not None and path.is_file():
            return str(path)
        if model.allow_random_weights:
            return None
        where = f"{path}" if path else f"(no default file name for config {stem!r})"
        raise ConfigError(
            f"No SAM2 checkpoint found at {where} (RPSAM2_SAM2_CHECKPOINT / RPSAM2_CHECKPOINT_DIR). "
            + CHECKPOINT_HELP
        )

    def public(self) -> dict[str, dict[str, Any]]:
        """Settings safe to log or show in /health: secrets masked."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            out[name] = {
                f.name: ("***" if f.metadata["secret"] and getattr(section, f.name) else getattr(section, f.name))
                for f in fields(section)
            }
        return out


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
