"""What label-studio-ml's manager did for Label Studio 1.23, reduced to what it calls, thread-safe.

label-studio-ml 1.0.9's manager keeps one model in a class attribute that /setup replaces while
/predict reads it, and its job manager forks a process per webhook.  Here a model object is a
cheap view of one label config (the heavy state is the runtime's or the workers'), so the
registry keeps one per config: several projects can share one backend, a request carrying its
own config gets its own model, and none of this forks.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from rpsam2_backend.core.errors import BackendError, BadRequest
from rpsam2_backend.web.model import RPSAM2Model
from rpsam2_backend.web.state import WebState

log = logging.getLogger(__name__)

MAX_MODELS = 64  # label configs kept (projects served at once)


class ModelRegistry:
    def __init__(self, state: WebState) -> None:
        self.state = state
        self._models: OrderedDict[str, RPSAM2Model] = OrderedDict()
        self._setup_config: str | None = None
        self._lock = threading.Lock()

    def model(self, label_config: str | None) -> RPSAM2Model:
        """The model of ``label_config``, else of the last /setup; BadRequest when there is none."""
        with self._lock:
            config = label_config or self._setup_config
            if config is None:
                raise BadRequest("no label config: Label Studio sends it with /setup and /predict")
            model = self._models.get(config)
            if model is None:
                model = RPSAM2Model(label_config=config)  # BadRequest when the config is unusable
                self._models[config] = model
                while len(self._models) > MAX_MODELS:
                    self._models.popitem(last=False)
            self._models.move_to_end(config)
            return model

    def setup(self, schema: str | None, hostname: str, access_token: str) -> str:
        """/setup: remember the project's config and Label Studio's host/token; the model version."""
        if schema is not None:
            self.model(schema)
            with self._lock:
                self._setup_config = schema
        self.state.saw_setup(hostname, access_token)
        return self.state.model_version

    def predict(self, tasks: list[Any], label_config: str | None, params: dict[str, Any]) -> tuple[list, str]:
        model = self.model(label_config)
        predictions = model.predict(tasks, **params)
        return predictions, self.state.model_version

    def webhook(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        try:
            # Training events need no label config (and a restarted backend may not have had a
            # /setup yet): a config-less model counts and triggers as well as any.
            return RPSAM2Model().process_event(event, data, None, {}) or {}
        except BackendError as exc:
            # Label Studio ignores webhook answers; the body says what happened for the logs.
            log.warning("webhook %s not processed (%s): %s", event, exc.status, exc.message)
            return {"error": exc.message, "status": exc.status}
