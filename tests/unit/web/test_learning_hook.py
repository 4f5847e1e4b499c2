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
