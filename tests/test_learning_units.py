"""Unit tests of the learning loop's rules: which annotation is a label, the split, the gate, counters, CLIs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from rpsam2_backend.core.retrain_status import read_status
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.engine.checkpoint_store import CheckpointStore
from rpsam2_backend.labelstudio.brush import mask_to_rle
from rpsam2_backend.labelstudio.label_config import parse_label_config
from rpsam2_backend.web.learning_hook import on_event, project_of
from trainer import cli_models
from trainer.accepted_labels import TaskLabel, classify_tasks, split_train_val
from trainer.retrain import gate

CONFIG = parse_label_config("""<View><Image name="image" value="$image"/>
  <KeyPointLabels name="click" toName="image" smart="true"><Label value="Tool"/></KeyPointLabels>
  <BrushLabels name="tag" toName="image"><Label value="Tool"/></BrushLabels></View>""")


def _brush(mask: np.ndarray) -> dict:
    h, w = mask.shape
    return {"id": "r1", "type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": w,
            "original_height": h, "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["Tool"]}}


KEYPOINT = {"id": "k1", "type": "keypointlabels", "from_name": "click", "to_name": "image",
            "value": {"x": 50, "y": 50, "keypointlabels": ["Tool"]}}


def _ann(id_: int, result: list, updated: str, **extra) -> dict:
    return {"id": id_, "result": result, "updated_at": updated, "created_at": updated, "was_cancelled": False, **extra}


def test_latest_uncancelled_annotation_wins_and_decides_the_kind():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:6] = True
    tasks = [
        # an older mask, then a newer keypoint-only annotation: the task is click-only now
        {"id": 1, "data": {"image": "/a.png"}, "annotations": [
            _ann(10, [_brush(mask)], "2024-01-01T00:00:00Z"), _ann(11, [KEYPOINT], "2024-02-01T00:00:00Z")]},
        # a newer cancelled annotation is ignored: the mask stays accepted
        {"id": 2, "data": {"image": "/b.png"}, "annotations": [
            _ann(20, [_brush(mask)], "2024-01-01T00:00:00Z"),
            _ann(21, [], "2024-03-01T00:00:00Z", was_cancelled=True)]},
        {"id": 3, "data": {"image": "/c.png"}, "annotations": [_ann(30, [], "2024-01-01T00:00:00Z")]},
        {"id": 4, "data": {"image": "/d.png"}, "annotations": []},
    ]
    labels = classify_tasks("7", tasks, CONFIG)
    assert [t.task_id for t in labels.accepted] == [2]
    assert labels.annotation_ids == [20]
    assert [t.task_id for t in labels.click_only] == [1]
    assert not labels.reviewed


def test_review_data_restricts_labels_to_accepted_reviews():
    mask = np.ones((4, 4), bool)
    tasks = [
        {"id": 1, "data": {"image": "/a.png"}, "annotations": [
            _ann(10, [_brush(mask)], "2024-01-01T00:00:00Z", reviews=[{"id": 1, "accepted": True}])]},
        {"id": 2, "data": {"image": "/b.png"}, "annotations": [
            _ann(20, [_brush(mask)], "2024-01-01T00:00:00Z", reviews=[{"id": 2, "accepted": False}])]},
        {"id": 3, "data": {"image": "/c.png"}, "annotations": [_ann(30, [_brush(mask)], "2024-01-01T00:00:00Z")]},
    ]
    labels = classify_tasks("7", tasks, CONFIG)
    assert labels.reviewed
    assert [t.task_id for t in labels.accepted] == [1]


def test_split_is_deterministic_and_never_empty():
    items = [TaskLabel(i, f"/{i}.png", 100 + i, {}) for i in range(1, 21)]
    train, val = split_train_val(items, 0.25)
    again_train, again_val = split_train_val(list(reversed(items)), 0.25)
    assert {t.task_id for t in val} == {t.task_id for t in again_val}
    assert val and train and len(train) + len(val) == 20
    assert not {t.task_id for t in train} & {t.task_id for t in val}
    two = split_train_val(items[:2], 0.0)
    assert len(two[0]) == 1 and len(two[1]) == 1


def test_gate_needs_a_gain_and_a_bounded_std():
    live = {"mdsc": 0.70, "std": 0.02}
    assert gate(live, {"mdsc": 0.75, "std": 0.02}, 0.0, 0.01)[0]
    ok, reason = gate(live, {"mdsc": 0.70, "std": 0.02}, 0.0, 0.01)
    assert not ok and "did not improve" in reason
    ok, reason = gate(live, {"mdsc": 0.80, "std": 0.05}, 0.0, 0.01)
    assert not ok and "std" in reason


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


def test_models_cli_lists_promotes_and_rolls_back(tmp_path, capsys):
    store = CheckpointStore(tmp_path, "shift")
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"x")
    first = store.add(src, {"metrics": {"candidate": {"mdsc": 0.5, "std": 0.1}}, "project": "3"})
    second = store.add(src, {})
    args = ["--model-dir", str(tmp_path)]
    assert cli_models.main(["promote", first, *args]) == 0
    assert cli_models.main(["promote", second, *args]) == 0
    assert cli_models.main(["list", *args]) == 0
    out = capsys.readouterr().out
    assert f"* {second}" in out and "mDSC 0.5000" in out
    assert cli_models.main(["rollback", *args]) == 0
    assert store.live() == first
    assert cli_models.main(["promote", "v9999", *args]) == 2
    assert "no shift version 'v9999'" in capsys.readouterr().err
    assert cli_models.main(["rollback", "--kind", "decoder", *args]) == 2
    with pytest.raises(SystemExit) as exc:
        cli_models.main(["explode", *args])
    assert exc.value.code == 2
