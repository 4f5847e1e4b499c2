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


def test_frames_of_one_video_stay_on_one_side_of_the_split():
    mask = np.ones((4, 4), bool)
    tasks = [{"id": 100 * v + f, "data": {"image": f"/v{v}/{f}.png", "video": f"case{v}", "frame": f},
              "annotations": [_ann(100 * v + f, [_brush(mask)], "2024-01-01T00:00:00Z")]}
             for v in range(1, 6) for f in range(1, 5)]
    tasks.append({"id": 7, "data": {"image": "/data/upload/1/ab-case0009_03.png"},  # video from the file name
                  "annotations": [_ann(7, [_brush(mask)], "2024-01-01T00:00:00Z")]})
    tasks.append({"id": 8, "data": {"image": "/still.png"}, "annotations": [_ann(8, [_brush(mask)], "2024-01-01")]})
    labels = classify_tasks("7", tasks, CONFIG)
    videos = {t.task_id: t.video for t in labels.accepted}
    assert videos[101] == "case1" and videos[7] == "case0009" and videos[8] is None
    train, val = split_train_val(labels.accepted, 0.4)
    assert train and val and len(train) + len(val) == len(tasks)
    train_videos = {t.video for t in train if t.video}
    val_videos = {t.video for t in val if t.video}
    assert not train_videos & val_videos  # no video on both sides
    for video in train_videos | val_videos:  # and all its frames on its side
        side = [t for t in train + val if t.video == video]
        assert all(t in train for t in side) or all(t in val for t in side)
    # custom data keys
    renamed = [{**t, "data": {"image": t["data"]["image"], "clip": t["data"].get("video"), "t": t["data"].get("frame")}}
               for t in tasks[:4]]
    assert {t.video for t in classify_tasks("7", renamed, CONFIG, ("clip", "t")).accepted} == {"case1"}


def test_tasks_without_video_split_as_before_by_task_id():
    items = [TaskLabel(i, f"/{i}.png", i, {}) for i in range(1, 21)]
    train, val = split_train_val(items, 0.25)
    from trainer.prompts import stable_hash

    expected_val = {i for i in range(1, 21) if stable_hash(("rpsam2-val", i)) / 2**63 < 0.25}
    assert {t.task_id for t in val} == expected_val and len(train) + len(val) == 20


def test_frames_of_a_single_video_split_into_a_training_block_and_a_later_validation_block():
    mask = np.ones((4, 4), bool)
    frames = [7, 2, 19, 4, 11, 5, 13, 1]  # task order is not frame order
    tasks = [{"id": 50 + i, "data": {"image": f"/v/{f}.png", "video": "case5013", "frame": f},
              "annotations": [_ann(50 + i, [_brush(mask)], "2024-01-01T00:00:00Z")]}
             for i, f in enumerate(frames)]
    labels = classify_tasks("7", tasks, CONFIG)
    assert sorted(t.frame for t in labels.accepted) == sorted(frames)
    train, val = split_train_val(labels.accepted, 0.25)
    assert [t.frame for t in train] == [1, 2, 4, 5, 7, 11]  # ceil(0.25 * 8) = 2 last frames validate
    assert [t.frame for t in val] == [13, 19]
    two_train, two_val = split_train_val(labels.accepted[:2], 0.0)  # never an empty side
    assert len(two_train) == 1 and len(two_val) == 1
    assert two_train[0].frame < two_val[0].frame
    all_val = split_train_val(labels.accepted, 1.0)
    assert len(all_val[0]) == 1 and len(all_val[1]) == 7
