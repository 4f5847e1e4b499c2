"""What the web process keeps between requests: settings, the dispatcher and the last model version.

No torch here: with REDIS_URL set the web process only parses JSON and waits on Redis.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rpsam2_backend.core.contracts import LabelStudioAccess
from rpsam2_backend.core.names import live_version, version_string
from rpsam2_backend.core.settings import Settings, get_settings
from rpsam2_backend.queue.dispatch import Dispatcher, make_dispatcher


def _expected_version(settings: Settings) -> str:
    """The version the workers will report, read from settings and MODEL_DIR without loading models."""
    model = settings.model

    def name(pinned: str, kind: str) -> str:
        return Path(pinned).name if pinned else (live_version(model.model_dir, kind) or "")

    try:
        random = settings.resolved_checkpoint() is None
    except Exception:  # the checkpoint may live on the worker machines only
        random = False
    return version_string(
        model.sam2_config, name(model.shift_checkpoint, "shift"), name(model.decoder_checkpoint, "decoder"), random
    )


class WebState:
    def __init__(self, settings: Settings, dispatcher: Dispatcher | None = None) -> None:
        self.settings = settings
        self.dispatcher = dispatcher or make_dispatcher(settings)
        self._lock = threading.Lock()
        self._model_version = _expected_version(settings)
        self._label_studio: LabelStudioAccess | None = None

    def saw_setup(self, hostname: str | None, access_token: str | None) -> None:
        """Label Studio's /setup names its host and a token for its media; used only when
        LABEL_STUDIO_URL is not configured here (then they travel with each job)."""
        if hostname and not self.settings.label_studio.url:
            with self._lock:
                self._label_studio = {"url": hostname, "token": access_token or ""}

    @property
    def label_studio(self) -> LabelStudioAccess | None:
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
