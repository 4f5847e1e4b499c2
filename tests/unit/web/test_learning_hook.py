"""The webhook hook counts usable labels and triggers a retrain at RPSAM2_RETRAIN_EVERY."""

from __future__ import annotations

from types import SimpleNamespace

from rpsam2_backend.core.retrain_status import read_status
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.web.learning_hook import on_event, project_of

KEYPOINT = {"id": "k1", "type": "keypointlabels", "from_name": "click", "to_name": "image",
            "value": {"x": 50, "y": 50, "keypointlabels": ["Tool"]}}


def test_inline_counter_counts_usable_labels_only(tmp_path, monkeypatch):
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path), "RPSAM2_RETRAIN_EVERY": "2"})
    started = []
    monkeypatch.setattr(
        "rpsam2_backend.queue.retrain._start_thread", lambda s, p: started.append(p) or {"enqueued": True}
    )
    state = SimpleNamespace(settings=settings, label_studio=None)
    good = {"annotation": {"id": 1, "project": 5, "result": [KEYPOINT]}, "project": {"id": 5}}
    skipped = {"annotation": {"id": 2, "result": [KEYPOINT], "was_cancelled": True}, "project": {"id": 5}}
    assert on_event("ANNOTATION_CREATED", skipped, state)["enqueued"] is False
    assert on_event("TASKS_CREATED", good, state)["enqueued"] is False
    first = on_event("ANNOTATION_CREATED", good, state)
    assert first["new_labels"] == 1 and not first["enqueued"] and not started
    second = on_event("ANNOTATION_UPDATED", good, state)
    assert second["enqueued"] and started == [{"project": "5", "reason": "2 new labels"}]
    assert on_event("ANNOTATION_CREATED", good, state)["new_labels"] == 1  # the counter restarted
    assert project_of({"project": "12.1700000000"}) == "12"
    assert read_status(tmp_path) is None


BRUSH = {"id": "b1", "type": "brushlabels", "from_name": "tag", "to_name": "image",
         "value": {"format": "rle", "rle": [0], "brushlabels": ["Tool"]}}


def test_a_submitted_mask_starts_a_propagation_when_frames_are_asked_for(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr("rpsam2_backend.queue.propagation._start_inline",
                        lambda s, p: started.append(p) or {"enqueued": True, "job": "j"})
    monkeypatch.setattr("rpsam2_backend.queue.retrain._start_thread", lambda s, p: {"enqueued": True})
    body = {"annotation": {"id": 40, "task": 12, "project": 5, "result": [BRUSH]}, "project": {"id": 5},
            "task": {"id": 12}}
    off = Settings.from_env({"MODEL_DIR": str(tmp_path)})  # RPSAM2_PROPAGATE_FRAMES=0: off
    assert "propagation" not in on_event("ANNOTATION_CREATED", body, SimpleNamespace(settings=off, label_studio=None))
    on = Settings.from_env({"MODEL_DIR": str(tmp_path), "RPSAM2_PROPAGATE_FRAMES": "3"})
    ls = {"url": "http://ls:8080", "token": "t"}
    out = on_event("ANNOTATION_UPDATED", body, SimpleNamespace(settings=on, label_studio=ls))
    assert out["propagation"] == {"enqueued": True, "job": "j"} and out["new_labels"] == 2
    assert started == [{"project": "5", "task": 12, "annotation": 40, "reason": "ANNOTATION_UPDATED",
                        "label_studio": ls}]
    # keypoints only, a skipped annotation, or no task id: no propagation
    clicks = {**body, "annotation": {**body["annotation"], "result": [KEYPOINT]}}
    assert "propagation" not in on_event("ANNOTATION_CREATED", clicks, SimpleNamespace(settings=on, label_studio=None))
    skipped = {**body, "annotation": {**body["annotation"], "was_cancelled": True}}
    assert "propagation" not in on_event("ANNOTATION_CREATED", skipped, SimpleNamespace(settings=on, label_studio=None))
    no_task = {"annotation": {"id": 41, "project": 5, "result": [BRUSH]}, "project": {"id": 5}}
    assert "propagation" not in on_event("ANNOTATION_CREATED", no_task, SimpleNamespace(settings=on, label_studio=None))
    assert len(started) == 1
    # an update that takes the masks away, or skips the frame: the job withdraws its propagations
    for removed in (clicks, skipped, {**body, "annotation": {**body["annotation"], "result": []}}):
        out = on_event("ANNOTATION_UPDATED", removed, SimpleNamespace(settings=on, label_studio=None))
        assert out["propagation"] == {"enqueued": True, "job": "j"}
    assert [p["reason"] for p in started[1:]] == ["ANNOTATION_UPDATED"] * 3


def test_only_a_video_frame_starts_a_propagation(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr("rpsam2_backend.queue.propagation._start_inline",
                        lambda s, p: started.append(p["task"]) or {"enqueued": True, "job": "j"})
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path), "RPSAM2_PROPAGATE_FRAMES": "3",
                                  "RPSAM2_VIDEO_KEY": "clip", "RPSAM2_FRAME_KEY": "n"})
    state = SimpleNamespace(settings=settings, label_studio=None)

    def submit(task_id: int, data: dict) -> dict:
        body = {"annotation": {"id": task_id, "task": task_id, "result": [BRUSH]}, "project": {"id": 5},
                "task": {"id": task_id, "data": data}}
        return on_event("ANNOTATION_CREATED", body, state)

    plain = submit(1, {"image": "/data/upload/5/0a1b2c3d-voc.png"})
    assert plain["propagation"] == {"enqueued": False, "reason": "task 1 is not a video frame"}
    assert plain["new_labels"] == 1  # still a label for the retrain
    assert submit(2, {"image": "/data/upload/5/x.png", "clip": "v1", "n": 4})["propagation"]["enqueued"]
    assert submit(3, {"image": "/data/upload/5/0a1b2c3d-case5013_01.png"})["propagation"]["enqueued"]
    # half-configured frame keys: the job reports what is missing, so it is started
    assert submit(4, {"image": "/data/upload/5/x.png", "clip": "v1"})["propagation"]["enqueued"]
    assert started == [2, 3, 4]
