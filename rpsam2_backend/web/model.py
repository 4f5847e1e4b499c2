"""The Label Studio face: Label Studio JSON in, brush RLE results out.  No torch, no method here.

One cheap object per label config (``web.registry``); heavy state lives in the runtime (inline)
or in the workers (RQ).
"""

from __future__ import annotations

import logging
from functools import lru_cache

from rpsam2_backend.core.contracts import PreencodePayload, SegmentPayload, SegmentResult
from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.core.names import PREENCODE_JOB, SEGMENT_JOB
from rpsam2_backend.labelstudio.clicks import ClickRequest, parse_context
from rpsam2_backend.labelstudio.label_config import LabelConfig, parse_label_config
from rpsam2_backend.labelstudio.rle_json import RLEBytes
from rpsam2_backend.labelstudio.tasks import image_url
from rpsam2_backend.web.label_studio_ml import LabelStudioMLBase
from rpsam2_backend.web.learning_hook import on_event
from rpsam2_backend.web.state import get_web_state

log = logging.getLogger(__name__)

# Label Studio's "Start training" button sends START_TRAINING, which label-studio-ml 1.0.9 ignores.
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "START_TRAINING")


@lru_cache(maxsize=64)
def _config(xml: str) -> LabelConfig:
    return parse_label_config(xml)


class RPSAM2Model(LabelStudioMLBase):
    TRAIN_EVENTS = TRAIN_EVENTS

    def __init__(self, label_config: str | None = None, **kwargs) -> None:
        # The base class parses the config with lxml (entity expansion on, errors as bare
        # Exceptions); ours refuses DTDs and entities and answers 400 with the reason.
        super().__init__(label_config=None, **kwargs)
        self.label_config = label_config
        if label_config is not None:
            _config(label_config)

    @property
    def model_version(self) -> str:
        return get_web_state().model_version

    @property
    def config(self) -> LabelConfig:
        if not self.label_config:
            raise BadRequest("no label config: Label Studio sends it with /setup and /predict")
        return _config(self.label_config)

    def predict(self, tasks: list[dict], **kwargs) -> list[dict]:
        request = parse_context(kwargs.get("context"))
        if request is None:
            # Label Studio asks for predictions when a task opens: no clicks yet, so answer
            # nothing at once and let a worker encode the image for the coming first click.
            self._preencode(tasks)
            return []
        if len(tasks) != 1:
            raise BadRequest(f"an interactive request carries exactly one task, got {len(tasks)}")
        return [self._segment(tasks[0], request)]

    def _segment(self, task: dict, request: ClickRequest) -> dict:
        config = self.config
        from_name, to_name = config.brush_for_label(request.label, request.to_name)
        url = image_url(task, config, request.to_name or to_name)
        payload: SegmentPayload = {
            "image_url": url,
            "clicks": [{"x": c.x, "y": c.y, "positive": c.positive} for c in request.clicks],
        }
        state = get_web_state()
        if state.label_studio:
            payload["label_studio"] = state.label_studio
        result: SegmentResult = state.dispatcher.call(SEGMENT_JOB, payload, routing_key=url)
        state.saw_version(result.get("model_version"))
        log.info(
            "task %s: %d click(s) -> %s mask of %d px (score %.3f, refined %s, %s, %.3f s)",
            task.get("id"), len(request.clicks), request.label, result["area"], result["score"],
            result.get("refined_point"), "encoded" if result.get("encoded") else "cached", result["seconds"],
        )
        return {
            "result": [
                {
                    "from_name": from_name,
                    "to_name": to_name,
                    "type": "brushlabels",
                    "original_width": result["width"],
                    "original_height": result["height"],
                    "image_rotation": 0,
                    "value": {"format": "rle", "rle": RLEBytes(result["rle"]), "brushlabels": [request.label]},
                }
            ],
            "model_version": result.get("model_version") or self.model_version,
            "score": result["score"],
        }

    def _preencode(self, tasks: list[dict]) -> None:
        if not self.label_config or not isinstance(tasks, list):
            return
        state = get_web_state()
        for task in tasks[:1]:  # the task being opened; batch retrievals would only flood the workers
            try:
                url = image_url(task, self.config, None)
            except BadRequest:
                continue
            payload: PreencodePayload = {"image_url": url}
            if state.label_studio:
                payload["label_studio"] = state.label_studio
            state.dispatcher.submit(PREENCODE_JOB, payload, routing_key=url)

    def fit(self, tasks, workdir=None, **kwargs) -> dict:
        # Training never runs in the request: the learning loop counts and enqueues.
        return on_event(kwargs.get("event"), kwargs.get("data") or {}, get_web_state())
