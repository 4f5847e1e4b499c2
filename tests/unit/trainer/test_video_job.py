"""The propagation job against an in-memory Label Studio (the real server: tests/integration/labelstudio).

A 6-frame generated clip with a red and a green instrument; random-weight hiera_t's video
predictor at 128 px, so the masks mean nothing: the tests check where predictions land, what they
carry, that they are sam2's masks, what they supersede, and how bad input fails.
"""

from __future__ import annotations

import copy
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.core.propagation_status import read_propagation_status
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.engine.video.tracker import ObjectTrack, PropagatedFrame
from rpsam2_backend.labelstudio.brush import mask_to_rle, rle_to_mask
from rpsam2_backend.labelstudio.video_frames import VideoFrameError
from rpsam2_backend.web.app import create_app
from tests.support.video_clip import moving_clip
from trainer.video import job as video_job
from trainer.video.job import propagate_job

CONFIG = """<View><Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Tool"/><Label value="Knife"/></BrushLabels></View>"""
IMAGES, MASKS = moving_clip(6)
FIRST_TASK = 101  # frame k of the clip is task 100 + k (frames numbered 1..6)


def _region(region_id: str, mask: np.ndarray, label: str) -> dict:
    h, w = mask.shape
    return {"id": region_id, "from_name": "tag", "to_name": "image", "type": "brushlabels", "original_width": w,
            "original_height": h, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]}}


def _annotation(id_: int, regions: list[dict], updated: str = "2026-01-01T00:00:00Z", **extra) -> dict:
    return {"id": id_, "result": regions, "was_cancelled": False, "created_at": updated, "updated_at": updated,
            **extra}


class FakeLabelStudio:
    """The LabelStudioClient calls the job makes, over dicts; images by URL from the clip."""

    def __init__(self) -> None:
        self.tasks = [{"id": 100 + k, "data": {"image": f"/data/upload/1/frame{k}.png", "video": "clip", "frame": k},
                       "annotations": []} for k in range(1, 7)]
        self.stored: list[dict] = []
        self.deleted: list[int] = []
        self.next_id = 1
        self.images = {f"/data/upload/1/frame{k}.png": IMAGES[k - 1] for k in range(1, 7)}
        self.loads: list[str] = []

    def task(self, task_id: int) -> dict:
        return next(t for t in self.tasks if t["id"] == task_id)

    # the client
    def label_config(self, project):
        return CONFIG

    def all_tasks(self, project):
        return copy.deepcopy(self.tasks)

    def predictions(self, project):
        return copy.deepcopy(self.stored)

    def import_predictions(self, project, predictions):
        for pred in predictions:
            self.stored.append({"id": self.next_id, **pred})
            self.next_id += 1

    def delete_prediction(self, prediction_id):
        self.deleted.append(prediction_id)
        self.stored = [p for p in self.stored if p["id"] != prediction_id]

    # the image loader
    def load(self, url):
        self.loads.append(url)
        return SimpleNamespace(rgb=self.images[url])

    def on(self, task_id: int) -> list[dict]:
        return [p for p in self.stored if p["task"] == task_id]


@pytest.fixture
def ls(monkeypatch) -> FakeLabelStudio:
    fake = FakeLabelStudio()
    monkeypatch.setattr(video_job, "_client_and_loader", lambda settings, payload: (fake, fake))
    return fake


def _settings(tmp_path, **env: str) -> Settings:
    base = {"MODEL_DIR": str(tmp_path / "models"), "LABEL_STUDIO_URL": "http://ls.invalid",
            "RPSAM2_PROPAGATE_FRAMES": "3", "RPSAM2_PROPAGATE_MIN_CONFIDENCE": "0"}
    return Settings.from_env({**base, **env})


def _submit(ls: FakeLabelStudio, frame: int, annotation_id: int, regions: list[dict], **extra) -> int:
    task = ls.task(100 + frame)
    task["annotations"].append(_annotation(annotation_id, regions, **extra))
    return task["id"]


def test_predictions_land_on_the_next_frames_up_to_a_labelled_one_with_sam2s_masks(ls, tmp_path, video_engine):
    seed = _submit(ls, 1, 11, [_region("r-tool", MASKS[0]["Tool"], "Tool"),
                               _region("r-knife", MASKS[0]["Knife"], "Knife")])
    _submit(ls, 4, 41, [_region("x", MASKS[3]["Tool"], "Tool")])  # a person labelled frame 4 already
    settings = _settings(tmp_path, RPSAM2_PROPAGATE_FRAMES="4")
    status = propagate_job({"project": "1", "task": seed, "reason": "ANNOTATION_CREATED"}, settings, video_engine)

    # the window ends before the labelled frame: that frame is never tracked, the ones after it
    # are left to a propagation from the person's own labels
    assert status["status"] == "done" and status["predicted_tasks"] == [102, 103]
    assert status["window"]["forward_end"] == "frame 4 (task 104) is labelled"
    assert not ls.on(104) and not ls.on(105) and not ls.on(101)
    version = "propagated from task 101 (annotation 11) by sam2.1_hiera_t RANDOM-WEIGHTS"
    (direct,) = video_engine.propagate(IMAGES[:3], 0, {"r-tool": MASKS[0]["Tool"], "r-knife": MASKS[0]["Knife"]},
                                       forward=1, min_confidence=0.0)
    for task_id in (102, 103):
        (pred,) = ls.on(task_id)
        assert pred["model_version"] == version
        regions = {r["id"]: r for r in pred["result"]}
        assert set(regions) == {"r-tool", "r-knife"}
        for region_id, label in (("r-tool", "Tool"), ("r-knife", "Knife")):
            region = regions[region_id]
            assert region["value"]["brushlabels"] == [label]
            assert (region["from_name"], region["to_name"]) == ("tag", "image")
            assert (region["original_width"], region["original_height"]) == (128, 96)
            mask = rle_to_mask(region["value"]["rle"], 96, 128)
            assert mask.shape == (96, 128) and mask.any()
            if task_id == 102:  # the first propagated frame is what sam2 gives on the same frames and masks
                assert np.array_equal(mask, direct.objects[region_id].mask)
                assert region["score"] == round(direct.objects[region_id].confidence, 6)
        assert pred["score"] == min(r["score"] for r in pred["result"])
        assert status["scores"][task_id] == round(pred["score"], 4)
    assert ls.on(102)[0]["score"] == round(direct.score, 6)
    # frames are fetched one at a time as the tracker reaches them, the seed once
    assert ls.loads == [f"/data/upload/1/frame{k}.png" for k in (1, 2, 3)]


def test_a_newer_submission_supersedes_older_propagated_predictions(ls, tmp_path, video_engine):
    settings = _settings(tmp_path, RPSAM2_PROPAGATE_FRAMES="2")
    other = {"task": 106, "result": [], "model_version": "rpsam2/sam2.1_hiera_t", "score": 0.9}
    from_frame4 = {"task": 105, "result": [], "model_version": "propagated from task 104 (annotation 7) by x",
                   "score": 0.5}
    far_from_same = {"task": 106, "result": [], "model_version": "propagated from task 101 (annotation 1) by x",
                     "score": 0.5}
    ls.import_predictions("1", [other, from_frame4, far_from_same])
    seed = _submit(ls, 1, 11, [_region("r1", MASKS[0]["Tool"], "Tool")])
    first = propagate_job({"project": "1", "task": seed, "reason": "ANNOTATION_CREATED"}, settings, video_engine)
    assert first["predicted_tasks"] == [102, 103] and first["superseded"] == 1  # the one from 101's older label
    assert [p["model_version"] for p in ls.on(106)] == ["rpsam2/sam2.1_hiera_t"]
    old_ids = {p["id"] for p in ls.stored if p["task"] in (102, 103)}

    # the annotator resubmits frame 1 with only the knife (a newer annotation of the same task)
    _submit(ls, 1, 12, [_region("r2", MASKS[0]["Knife"], "Knife")], updated="2026-02-01T00:00:00Z")
    second = propagate_job({"project": "1", "task": seed, "reason": "ANNOTATION_UPDATED"}, settings, video_engine)
    assert second["annotation"] == 12 and second["superseded"] == 2 and set(ls.deleted) >= old_ids
    for task_id in (102, 103):
        (pred,) = ls.on(task_id)
        assert pred["model_version"].startswith("propagated from task 101 (annotation 12)")
        assert [r["value"]["brushlabels"] for r in pred["result"]] == [["Knife"]]
    assert [p["model_version"] for p in ls.on(105)] == [from_frame4["model_version"]]  # not covered: kept

    # /health shows the last propagation of the project
    health = create_app(settings, warm=False).test_client().get("/health").get_json()
    last = health["last_propagation"]["1"]
    assert last["status"] == "done" and last["task"] == seed and last["annotation"] == 12 and last["time"]
    assert read_propagation_status(settings.model.model_dir)["1"]["predicted_tasks"] == [102, 103]


def test_removing_a_frames_masks_withdraws_what_it_propagated(ls, tmp_path, video_engine):
    settings = _settings(tmp_path, RPSAM2_PROPAGATE_FRAMES="2")
    seed = _submit(ls, 1, 11, [_region("r1", MASKS[0]["Tool"], "Tool")])
    from_frame4 = {"task": 105, "result": [], "model_version": "propagated from task 104 (annotation 7) by x"}
    ls.import_predictions("1", [from_frame4])
    assert propagate_job({"project": "1", "task": seed, "reason": "ANNOTATION_CREATED"}, settings,
                         video_engine)["predicted_tasks"] == [102, 103]

    # the annotator updates frame 1: the tool was a reflection, no mask is left
    ls.task(seed)["annotations"][0].update(result=[], updated_at="2026-02-01T00:00:00Z")
    status = propagate_job({"project": "1", "task": seed, "reason": "ANNOTATION_UPDATED"}, settings, video_engine)
    assert status["status"] == "withdrawn" and status["withdrawn"] == 2
    assert "task 101's latest annotation has no brush mask" in status["reason"]
    assert not ls.on(102) and not ls.on(103)
    assert [p["model_version"] for p in ls.stored] == [from_frame4["model_version"]]  # another seed's: kept
    again = propagate_job({"project": "1", "task": seed, "reason": "ANNOTATION_UPDATED"}, settings, video_engine)
    assert again["status"] == "skipped" and ls.stored == [{"id": 1, **from_frame4}]


def test_a_seed_on_a_later_frame_supersedes_an_earlier_seeds_predictions_on_the_frames_both_cover(
        ls, tmp_path, video_engine):
    settings = _settings(tmp_path)
    first = _submit(ls, 1, 11, [_region("r1", MASKS[0]["Tool"], "Tool")])
    assert propagate_job({"project": "1", "task": first, "reason": "x"}, settings, video_engine)[
        "predicted_tasks"] == [102, 103, 104]
    # the annotator corrects frame 3 (a suggestion from frame 1) and submits it
    second = _submit(ls, 3, 31, [_region("r3", MASKS[2]["Knife"], "Knife")])
    status = propagate_job({"project": "1", "task": second, "reason": "x"}, settings, video_engine)
    assert status["predicted_tasks"] == [104, 105, 106] and status["superseded"] == 1

    def sources(task_id: int) -> list[str]:
        return [p["model_version"].split(" by ")[0] for p in ls.on(task_id)]

    assert sources(104) == ["propagated from task 103 (annotation 31)"]  # frame 1's is gone
    assert sources(102) == sources(103) == ["propagated from task 101 (annotation 11)"]  # not covered: kept


class GatedEngine:
    """Stands in for the video engine: carries the seed masks unchanged; the propagation seeded
    with region ``hold`` waits for ``release`` before its first frame (a slow SAM2)."""

    config = "configs/sam2.1/sam2.1_hiera_t.yaml"
    random_weights = True

    def __init__(self, hold: str) -> None:
        self.hold = hold
        self.inside = threading.Event()
        self.release = threading.Event()

    def propagate(self, frames, seed, masks, forward, backward=0, min_confidence=0.0, offload_state=False):
        if self.hold in masks:
            self.inside.set()
            assert self.release.wait(60), "never released"
        for step in range(1, forward + 1):
            yield PropagatedFrame(seed + step, step, {k: ObjectTrack(m, 3.0, 0.9, int(m.sum()), 1.0, 0.8)
                                                      for k, m in masks.items()})


def test_two_seeds_of_one_video_propagating_at_once_leave_one_prediction_per_frame(ls, tmp_path, monkeypatch):
    """Frame 1's propagation (102-104) is held while tracking; frame 2's (103-105) starts then.
    Whatever the order they finish in, frames 103 and 104 end with frame 2's prediction only."""
    settings = _settings(tmp_path)
    engine = GatedEngine(hold="r1")
    second_started = threading.Event()  # the second job is at the video lock, or (unlocked) reads predictions
    read_predictions = ls.predictions
    real_lock = getattr(video_job, "propagation_video_lock", None)

    def predictions(project):
        if threading.current_thread().name == "second":
            second_started.set()
        return read_predictions(project)

    def lock(settings, project, video):
        if threading.current_thread().name == "second":
            second_started.set()
        return real_lock(settings, project, video)

    monkeypatch.setattr(ls, "predictions", predictions)
    monkeypatch.setattr(video_job, "propagation_video_lock", lock, raising=False)
    errors: list[BaseException] = []

    def run(task_id: int) -> None:
        try:
            propagate_job({"project": "1", "task": task_id, "reason": "x"}, settings, engine)
        except BaseException as exc:  # reported by the assertion below, not lost in the thread
            errors.append(exc)

    first = threading.Thread(target=run, args=(_submit(ls, 1, 11, [_region("r1", MASKS[0]["Tool"], "Tool")]),),
                             name="first")
    first.start()
    assert engine.inside.wait(60)  # the first has its window (frame 2 unlabelled then) and tracks
    second = threading.Thread(target=run, args=(_submit(ls, 2, 21, [_region("r2", MASKS[1]["Tool"], "Tool")]),),
                              name="second")
    second.start()
    assert second_started.wait(60)
    engine.release.set()
    first.join(60)
    second.join(60)
    assert not first.is_alive() and not second.is_alive() and not errors

    def sources(task_id: int) -> list[str]:
        return [p["model_version"].split(" by ")[0] for p in ls.on(task_id)]

    assert sources(102) == ["propagated from task 101 (annotation 11)"]
    for task_id in (103, 104, 105):
        assert sources(task_id) == ["propagated from task 102 (annotation 21)"], task_id


class FailingUpload(FakeLabelStudio):
    """The second upload of a propagation is stored, then its answer is lost (a read timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.uploads = 0
        self.fail_at: int | None = None

    def import_predictions(self, project, predictions):
        self.uploads += 1
        super().import_predictions(project, predictions)
        if self.uploads == self.fail_at:
            raise ConnectionError("read timed out")


@pytest.fixture
def failing_ls(monkeypatch) -> FailingUpload:
    fake = FailingUpload()
    monkeypatch.setattr(video_job, "_client_and_loader", lambda settings, payload: (fake, fake))
    return fake


def test_a_propagation_that_fails_partway_leaves_the_older_predictions_alone(failing_ls, tmp_path, video_engine):
    settings = _settings(tmp_path, RPSAM2_PSEUDO_BATCH="1")
    ls = failing_ls

    def snapshot() -> list[tuple[int, int, str]]:
        return sorted((p["id"], p["task"], p["model_version"]) for p in ls.stored)

    seed = _submit(ls, 1, 11, [_region("r1", MASKS[0]["Tool"], "Tool")])
    propagate_job({"project": "1", "task": seed, "reason": "x"}, settings, video_engine)
    before = snapshot()
    assert [task for _, task, _ in before] == [102, 103, 104]
    _submit(ls, 1, 12, [_region("r2", MASKS[0]["Knife"], "Knife")], updated="2026-02-01T00:00:00Z")
    ls.fail_at = ls.uploads + 2  # the new run's first frame goes up, its second is stored but "fails"
    with pytest.raises(ConnectionError, match="read timed out"):
        propagate_job({"project": "1", "task": seed, "reason": "x"}, settings, video_engine)
    # what the annotator sees: frame 1's older propagation, whole, and none of the failed one
    assert ls.uploads == 5 and snapshot() == before
    last = read_propagation_status(settings.model.model_dir)["1"]
    assert last["status"] == "failed" and "read timed out" in last["reason"]


def test_a_failed_upload_frees_the_engine_at_once(failing_ls, tmp_path, video_engine):
    settings = _settings(tmp_path, RPSAM2_PSEUDO_BATCH="1")
    failing_ls.fail_at = 2
    seed = _submit(failing_ls, 1, 11, [_region("r1", MASKS[0]["Tool"], "Tool")])
    with pytest.raises(ConnectionError) as failure:
        propagate_job({"project": "1", "task": seed, "reason": "x"}, settings, video_engine)
    # the traceback (kept here) holds the job's frames: the engine must not wait for them to be collected
    assert failure.value is not None
    free = video_engine._lock.acquire(blocking=False)
    if free:
        video_engine._lock.release()
    assert free, "the engine's lock is still held by the suspended propagation"


def test_backward_and_the_stop_of_a_drifting_object(ls, tmp_path, video_engine):
    seed = _submit(ls, 4, 41, [_region("r1", MASKS[3]["Tool"], "Tool")])
    settings = _settings(tmp_path, RPSAM2_PROPAGATE_BACKWARD="1", RPSAM2_PROPAGATE_MIN_CONFIDENCE="0.3")
    status = propagate_job({"project": "1", "task": seed, "reason": "x"}, settings, video_engine)
    # random weights drift at once: each direction predicts its first frame, low-scored, and stops
    assert status["predicted_tasks"] == [105, 103]
    assert [(s["task"], s["distance"]) for s in status["stopped_objects"]] == [(105, 1), (103, -1)]
    assert all(s["reason"].startswith("confidence ") and s["label"] == "Tool" for s in status["stopped_objects"])
    assert status["window"] == {"forward": 2, "backward": 3, "forward_end": "end of the video",
                                "backward_end": "reached 3 frames"}
    for task_id in (105, 103):
        (pred,) = ls.on(task_id)
        assert pred["score"] < 0.3


def test_a_missing_frame_task_stops_the_propagation_and_the_status_warns(ls, tmp_path, video_engine):
    ls.tasks = [t for t in ls.tasks if t["id"] != 104]  # frame 4 was never imported
    seed = _submit(ls, 2, 21, [_region("r1", MASKS[1]["Tool"], "Tool")])
    status = propagate_job({"project": "1", "task": seed, "reason": "x"}, _settings(tmp_path), video_engine)
    assert status["status"] == "done" and status["predicted_tasks"] == [103]
    assert status["warning"] == ("forward propagation stopped early: gap in the frame numbers after frame 3 "
                                 "(next is frame 5, step 1)")
    assert not ls.on(105)
    full = propagate_job({"project": "1", "task": _submit(ls, 5, 51, [_region("r1", MASKS[4]["Tool"], "Tool")]),
                          "reason": "x"}, _settings(tmp_path), video_engine)
    assert full["predicted_tasks"] == [106] and "warning" not in full  # the end of the video is no gap


def test_bad_input_fails_the_job_with_a_message_and_a_status(ls, tmp_path, video_engine):
    settings = _settings(tmp_path)
    ls.tasks.append({"id": 200, "data": {"image": "/data/upload/1/voc.png"}, "annotations": [
        _annotation(1, [_region("r", MASKS[0]["Tool"], "Tool")])]})
    with pytest.raises(VideoFrameError, match="task 200 is not a frame of a known video"):
        propagate_job({"project": "1", "task": 200, "reason": "x"}, settings, video_engine)
    last = read_propagation_status(settings.model.model_dir)["1"]
    assert last["status"] == "failed" and "task 200 is not a frame of a known video" in last["reason"]

    seed = _submit(ls, 2, 21, [_region("r", np.ones((48, 64), bool), "Tool")])
    with pytest.raises(BadRequest, match=r"task 102: brush region r is 64x48 .* but the task's image is 128x96"):
        propagate_job({"project": "1", "task": seed, "reason": "x"}, settings, video_engine)

    keypoint = {"id": "k", "type": "keypointlabels", "from_name": "kp", "to_name": "image",
                "value": {"x": 1, "y": 1, "keypointlabels": ["Tool"]}}
    seed = _submit(ls, 5, 51, [keypoint], updated="2026-03-01T00:00:00Z")
    status = propagate_job({"project": "1", "task": seed, "reason": "x"}, settings, video_engine)
    assert status["status"] == "skipped" and "has no brush mask" in status["reason"] and not ls.stored
    with pytest.raises(ValueError, match="needs a 'project' and a 'task'"):
        propagate_job({"project": "1"}, settings, video_engine)
