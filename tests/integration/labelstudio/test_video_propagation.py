"""A mask submitted on frame 1 of a 6-frame video in a real Label Studio lands on frames 2-4.

Label Studio 1.23.2 <-> `label-studio-ml start rpsam2_backend` (REDIS_URL, RPSAM2_PROPAGATE_FRAMES=3)
<-> redis-server <-> `rpsam2-worker --queues click,train` (random-weight hiera_t; its video
predictor at a 128 px input).  The frames are uploaded as Cataract-1K files (case5013_01.png ..
case5013_06.png): no task data keys, the file names say video and frame.  The annotation is
created through Label Studio's API; Label Studio's own webhook tells the backend, the backend
enqueues the propagation on the training queue, the worker fetches the frames from Label Studio
and uploads the predictions through its API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from rpsam2_backend.labelstudio.brush import mask_to_rle, rle_to_mask
from tests.support.labelstudio_server import LS_TOKEN, LabelStudioServer, free_loopback_port, start_label_studio
from tests.support.paths import REPO_ROOT
from tests.support.rpsam2_stack import Stack, backend_health, start_stack
from tests.support.video_clip import HEIGHT, WIDTH, moving_clip

pytestmark = pytest.mark.slow

LABEL_CONFIG = (REPO_ROOT / "deploy" / "label_config.xml").read_text()
LABEL = "Spatula"


@pytest.fixture(scope="module")
def video_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabelStudioServer, Stack]]:
    ls_port = free_loopback_port()
    stack = start_stack(
        tmp_path_factory.mktemp("stack"), worker_queues="click,train",
        LABEL_STUDIO_URL=f"http://127.0.0.1:{ls_port}", LABEL_STUDIO_API_KEY=LS_TOKEN,
        RPSAM2_PROPAGATE_FRAMES="3", RPSAM2_PROPAGATE_MIN_CONFIDENCE="0", RPSAM2_PROPAGATE_IMAGE_SIZE="128",
    )
    try:
        with start_label_studio(tmp_path_factory.mktemp("label-studio"), port=ls_port) as ls:
            stack.wait_ready()
            yield ls, stack
    finally:
        stack.stop()


def _region(mask: np.ndarray) -> dict:
    return {"id": "spatula-1", "from_name": "tag", "to_name": "image", "type": "brushlabels",
            "original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [LABEL]}}


def _wait_for(check, timeout_s: float, stack: Stack, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"{what} within {timeout_s:.0f} s\n{stack.logs()}")


def _last_done(stack: Stack, project: int, trigger: str = "ANNOTATION_CREATED") -> dict | None:
    """The project's last propagation from /health once it finished (the job writes it last)."""
    last = (backend_health(stack.backend_url) or {}).get("last_propagation", {}).get(str(project))
    return last if last and last["status"] == "done" and last["trigger"] == trigger else None


def test_a_submitted_frame_is_propagated_to_the_next_three_frames(video_stack, tmp_path):
    ls, stack = video_stack
    images, masks = moving_clip(6)
    project = ls.api.create_project("video propagation", LABEL_CONFIG)
    tasks = []
    for k, image in enumerate(images, start=1):
        path = tmp_path / f"case5013_{k:02d}.png"
        Image.fromarray(image).save(path)
        tasks.append(ls.api.upload_image(project, path)[0])
    ml_id = ls.api.connect_ml_backend(project, stack.backend_url, title="RP-SAM2")
    assert ls.api.get_ml_backend(ml_id)["readable_state"] == "Connected", stack.logs()

    annotation = ls.api.create_annotation(tasks[0], [_region(masks[0]["Tool"])])

    def three() -> list[dict] | None:
        found = ls.api.list_predictions(project_id=project)
        return found if len(found) >= 3 else None

    predictions = _wait_for(three, 300, stack, "no predictions on 3 frames")
    assert sorted(p["task"] for p in predictions) == tasks[1:4]  # frames 2-4, not 1, 5, 6
    for pred in predictions:
        assert pred["model_version"].startswith(f"propagated from task {tasks[0]} (annotation {annotation['id']})")
        assert "RANDOM-WEIGHTS" in pred["model_version"]
        (region,) = pred["result"]
        assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == [LABEL]
        assert (region["from_name"], region["to_name"], region["id"]) == ("tag", "image", "spatula-1")
        assert (region["original_width"], region["original_height"]) == (WIDTH, HEIGHT)
        mask = rle_to_mask(region["value"]["rle"], HEIGHT, WIDTH)
        assert mask.any() and 0.0 <= pred["score"] <= 1.0
    assert ls.api.get_task(tasks[1])["total_annotations"] == 0  # a suggestion, never a label

    last = _wait_for(lambda: _last_done(stack, project), 60, stack, "/health shows no finished propagation")
    assert last["task"] == tasks[0] and last["predicted_tasks"] == tasks[1:4]

    # The annotator corrects frame 1: the new propagation replaces the old predictions
    old_ids = {p["id"] for p in predictions}
    ls.api.request("PATCH", f"/api/annotations/{annotation['id']}", json={"result": [_region(masks[0]["Knife"])]})

    def replaced() -> list[dict] | None:
        found = ls.api.list_predictions(project_id=project)
        ids = {p["id"] for p in found}
        return found if len(found) == 3 and not ids & old_ids else None

    again = _wait_for(replaced, 300, stack, "the update did not supersede the propagated predictions")
    assert sorted(p["task"] for p in again) == tasks[1:4]
    last = _wait_for(lambda: _last_done(stack, project, "ANNOTATION_UPDATED"), 60, stack, "no finished update")
    assert last["superseded"] == 3 and last["predicted_tasks"] == tasks[1:4]

    # The annotator removes frame 1's mask: what it propagated is withdrawn, not left behind
    ls.api.request("PATCH", f"/api/annotations/{annotation['id']}", json={"result": []})
    _wait_for(lambda: not ls.api.list_predictions(project_id=project), 300, stack,
              "removing the mask did not withdraw the propagated predictions")

    def withdrawn() -> dict | None:
        last = (backend_health(stack.backend_url) or {}).get("last_propagation", {}).get(str(project))
        return last if last and last["status"] == "withdrawn" else None

    last = _wait_for(withdrawn, 60, stack, "/health does not show the withdrawal")
    assert last["task"] == tasks[0] and last["withdrawn"] == 3
