"""What the web process keeps between requests: settings, the dispatcher and the last model version.

No torch here: with REDIS_URL set the web process only parses JSON and waits on Redis.
"""

from __future__ import annotations

import threading

from rpsam2_backend.dispatch import Dispatcher, make_dispatcher
from rpsam2_backend.engine.checkpoint_store import CheckpointStore
from rpsam2_backend.settings import Settings, get_settings


def _expected_version(settings: Settings) -> str:
    """The version the workers will report, read from settings and MODEL_DIR without loading models."""
    from pathlib import Path

    from rpsam2_backend.engine.predictor import version_string

    def name(pinned: str, kind: str) -> str:
        return Path(pinned).name if pinned else (CheckpointStore(settings.model_dir, kind).live() or "")

    try:
        random = settings.resolved_checkpoint() is None
    except Exception:  # the checkpoint may live on the worker machines only
        random = False
    return version_string(
        settings.sam2_config,
        name(settings.shift_checkpoint, "shift"),
        name(settings.decoder_checkpoint, "decoder"),
        random,
    )


class WebState:
    def __init__(self, settings: Settings, dispatcher: Dispatcher | None = None) -> None:
        self.settings = settings
        self.dispatcher = dispatcher or make_dispatcher(settings)
        self._lock = threading.Lock()
        self._model_version = _expected_version(settings)
        self._label_studio: dict | None = None

    def saw_setup(self, hostname: str | None, access_token: str | None) -> None:
        """Label Studio's /setup names its host and a token for its media; used only when
        LABEL_STUDIO_URL is not configured here (then they travel with each job)."""
        if hostname and not self.settings.label_studio_url:
            with self._lock:
                self._label_studio = {"url": hostname, "token": access_token or ""}

    @property
    def label_studio(self) -> dict | None:
        with self._lock:
            return self._label_studio

    @property
    def model_version(self) -> str:
        with self._lock:
            return self._model_version

    def saw_version(self, version: str | None) -> None:
        """Workers report the version that answered; Label Studio shows the latest one."""
        if version:
            with self._lock:
                self._model_version = version


_state: WebState | None = None


def get_web_state() -> WebState:
    global _state
    if _state is None:
        _state = WebState(get_settings())
    return _state


def set_web_state(state: WebState | None) -> None:
    global _state
    _state = state
