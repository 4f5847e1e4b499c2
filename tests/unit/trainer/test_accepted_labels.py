"""Which labels the learning loop trains on: the latest uncancelled annotation, accepted reviews."""

from __future__ import annotations

import numpy as np

from rpsam2_backend.labelstudio.brush import mask_to_rle
from rpsam2_backend.labelstudio.label_config import parse_label_config
from trainer.accepted_labels import TaskLabel, classify_tasks, split_train_val

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
