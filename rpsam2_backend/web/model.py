"""The Label Studio face: Label Studio JSON in, brush RLE (or polygon) results out.  No torch, no
method here.

One cheap object per label config (``web.registry``); heavy state lives in the runtime (inline)
or in the workers (RQ).

An interactive request with nothing to answer (its prompts were deleted, only negative clicks, a
newest negative click with no object) gets one prediction with an empty ``result``: HTTP 200, and
the editor clears its suggestions.  (``results: []`` would make Label Studio log an error.)
"""

from __future__ import annotations

import logging
import uuid
from functools import lru_cache

from rpsam2_backend.core.contracts import PreencodePayload, SegmentPayload, SegmentResult
from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.core.names import PREENCODE_JOB, SEGMENT_JOB
from rpsam2_backend.labelstudio.label_config import LabelConfig, OutputControl, parse_label_config
from rpsam2_backend.labelstudio.prompts import KEYPOINT_TYPE, REFINED_POINT_PREFIX, PromptRequest, parse_context
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
        context = kwargs.get("context")
        request = parse_context(context)
        if request is None:
            if isinstance(context, dict) and isinstance(context.get("result"), list):
                # The editor deleted the last prompt of a label: clear its suggestions.
                return [self._nothing(tasks, "no keypoint or rectangle prompts in the context")]
            # Label Studio asks for predictions when a task opens: no clicks yet, so answer
            # nothing at once and let a worker encode the image for the coming first click.
            self._preencode(tasks)
            return []
        if len(tasks) != 1:
            raise BadRequest(f"an interactive request carries exactly one task, got {len(tasks)}")
        if request.box is None and not any(c.positive for c in request.clicks):
            return [self._nothing(tasks, f"only negative clicks ({len(request.clicks)}) for {request.label!r}")]
        return [self._segment(tasks[0], request)]

    def _nothing(self, tasks: list, why: str) -> dict:
        task = tasks[0].get("id") if tasks and isinstance(tasks[0], dict) else None
        log.info("task %s: no mask: %s", task, why)
        return {"result": [], "model_version": self.model_version, "score": 0.0}

    def _segment(self, task: dict, request: PromptRequest) -> dict:
        config = self.config
        output = config.output_for_label(request.label, request.to_name)
        url = image_url(task, config, request.to_name, request.item_index)
        state = get_web_state()
        payload: SegmentPayload = {
            "image_url": url,
            "clicks": [{"x": c.x, "y": c.y, "positive": c.positive} for c in request.clicks],
            "original_width": request.original_width,
            "original_height": request.original_height,
            "output": "polygon" if output.type == "polygonlabels" else "brush",
            "object_margin_pct": state.settings.web.object_margin_pct,
        }
        if request.box is not None:
            b = request.box
            payload["box"] = {"x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1}
        if state.label_studio:
            payload["label_studio"] = state.label_studio
        result: SegmentResult = state.dispatcher.call(SEGMENT_JOB, payload, routing_key=url)
        state.saw_version(result.get("model_version"))
        version = result.get("model_version") or self.model_version
        prompt = f"box + {len(request.clicks)} click(s)" if request.box else f"{len(request.clicks)} click(s)"
        if request.other_items:
            prompt += f" (+{request.other_items} on other images, left out)"
        if not result.get("object_found", True):
            log.info("task %s: %s of %r: the newest click is negative and outside every object: no mask",
                     task.get("id"), prompt, request.label)
            return {"result": [], "model_version": version, "score": 0.0}
        log.info(
            "task %s: %s -> %s object %d/%d, %d px (score %.3f, refined %s, %s, %.3f s)",
            task.get("id"), prompt, request.label, result.get("object_clicks", 0), result.get("objects", 1),
            result["area"], result["score"], result.get("refined_point"),
            "encoded" if result.get("encoded") else "cached", result["seconds"],
        )
        regions = self._regions(request, output, result)
        refined = result.get("refined_point")
        if refined and request.box is None and state.settings.web.show_refined_point:
            regions.append(self._refined_point(request, result, refined))
        return {"result": regions, "model_version": version, "score": result["score"]}

    @staticmethod
    def _common(request: PromptRequest, result: SegmentResult) -> dict:
        common = {
            "original_width": result["width"],
            "original_height": result["height"],
            # Coordinates are of the unrotated image whatever the view rotation: echo it as sent.
            "image_rotation": request.image_rotation,
        }
        if request.item_index is not None:
            common["item_index"] = request.item_index
        return common

    def _regions(self, request: PromptRequest, output: OutputControl, result: SegmentResult) -> list[dict]:
        head = {"from_name": output.name, "to_name": output.to_name, "type": output.type}
        if output.type == "polygonlabels":
            return [
                {"id": _region_id(), **head, **self._common(request, result),
                 "value": {"points": points, "polygonlabels": [request.label]}}
                for points in result.get("polygons") or []
            ]
        return [{
            "id": _region_id(), **head, **self._common(request, result),
            "value": {"format": "rle", "rle": RLEBytes(result["rle"]), "brushlabels": [request.label]},
        }]

    @classmethod
    def _refined_point(cls, request: PromptRequest, result: SegmentResult, point: list[float]) -> dict:
        """A keypoint suggestion where the shift block moved the first click.

        ``dynamic: true`` makes it a smart-tool region for the editor: "accept all" and Auto-Accept
        delete it together with the clicks, and an unaccepted suggestion is never saved, so it is
        display only (checked in headless Chromium: the submitted annotation has no such keypoint).
        It must not be ``readonly``: the editor keeps readonly regions when it deletes the clicks.
        """
        return {
            # The clicked KeyPointLabels control and label: a point of the object's own colour.
            "id": REFINED_POINT_PREFIX + uuid.uuid4().hex[:10], "from_name": request.from_name,
            "to_name": request.to_name,
            "type": KEYPOINT_TYPE, **cls._common(request, result), "dynamic": True,
            "value": {"x": point[0], "y": point[1], "width": 0.6, "keypointlabels": [request.label]},
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


def _region_id() -> str:
    return "rpsam2-" + uuid.uuid4().hex[:10]
