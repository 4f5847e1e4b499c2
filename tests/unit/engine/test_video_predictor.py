"""Our tracking step is sam2's propagate_in_video, bit for bit; pruning keeps what memory reads."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
from PIL import Image
from sam2.build_sam import build_sam2_video_predictor
from sam2.sam2_video_predictor import SAM2VideoPredictor

from rpsam2_backend.engine.video.predictor import ScoredVideoPredictor, memory_reach, prune_behind
from tests.conftest import TINY_CONFIG
from tests.support.video_clip import moving_clip


@pytest.fixture(scope="module")
def plain_predictor(video_engine) -> SAM2VideoPredictor:
    """Upstream's SAM2VideoPredictor (not our subclass) with the test engine's weights."""
    plain = build_sam2_video_predictor(TINY_CONFIG, None, device="cpu",
                                       hydra_overrides_extra=["++model.image_size=128"])
    assert type(plain) is SAM2VideoPredictor
    plain.load_state_dict(video_engine.predictor.state_dict())
    plain.fill_hole_area = 0
    return plain.eval()


def test_engine_gives_what_sam2s_video_predictor_gives_on_the_same_frames_and_masks(
    video_engine, plain_predictor, tmp_path
):
    images, masks = moving_clip(5)
    # sam2 reads JPEG folders only: both sides get the decoded JPEGs, so the pixels are the same.
    for t, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{t:05d}.jpg", quality=95)
    decoded = [np.asarray(Image.open(tmp_path / f"{t:05d}.jpg").convert("RGB")) for t in range(5)]
    seed = 1
    state = plain_predictor.init_state(str(tmp_path), offload_video_to_cpu=True)
    for obj_id, name in ((1, "Tool"), (2, "Knife")):
        plain_predictor.add_new_mask(state, frame_idx=seed, obj_id=obj_id, mask=masks[seed][name])
    direct = {t: (logits[:, 0] > 0).numpy() for t, _, logits in
              plain_predictor.propagate_in_video(state, start_frame_idx=seed, max_frame_num_to_track=3)}

    ours = list(video_engine.propagate(decoded, seed, {1: masks[seed]["Tool"], 2: masks[seed]["Knife"]},
                                       forward=3, min_confidence=0.0))
    assert [f.index for f in ours] == [2, 3, 4] and [f.distance for f in ours] == [1, 2, 3]
    first = ours[0]
    assert np.array_equal(first.objects[1].mask, direct[2][0]) and np.array_equal(first.objects[2].mask, direct[2][1])
    for frame in ours:
        for row, obj_id in enumerate((1, 2)):
            assert np.array_equal(frame.objects[obj_id].mask, direct[frame.index][row]), (frame.index, obj_id)
    assert first.objects[1].mask.shape == (96, 128) and first.objects[1].mask.any()


def test_the_scored_predictor_keeps_the_chosen_masks_predicted_iou(video_engine):
    assert isinstance(video_engine.predictor, ScoredVideoPredictor)
    images, masks = moving_clip(3)
    (frame,) = video_engine.propagate(images, 0, {"a": masks[0]["Tool"]}, forward=1, min_confidence=0.0)
    track = frame.objects["a"]
    # sam2's IoU head ends in a sigmoid: a probability, never the dummy 1.0 of a prompted frame
    assert 0.0 < track.iou < 1.0 and track.iou != pytest.approx(1.0)


def test_memory_reach_is_what_the_model_reads():
    model = type("M", (), {"num_maskmem": 7, "max_obj_ptrs_in_encoder": 16, "memory_temporal_stride_for_eval": 1})
    assert memory_reach(model) == 16
    model.max_obj_ptrs_in_encoder, model.memory_temporal_stride_for_eval = 4, 3
    assert memory_reach(model) == 21


def _state(frames: list[int], cond: list[int]) -> dict:
    outputs = {"cond_frame_outputs": {t: {} for t in cond}, "non_cond_frame_outputs": {t: {} for t in frames}}
    return {"output_dict_per_obj": OrderedDict({0: outputs, 1: {"cond_frame_outputs": {},
                                                                 "non_cond_frame_outputs": {t: {} for t in frames}}})}


def test_prune_behind_drops_only_frames_beyond_reach_in_the_direction_of_travel():
    state = _state(list(range(0, 30)), cond=[5])
    assert prune_behind(state, 25, keep=16) == 2 * 9  # 0..8 are more than 16 behind 25
    assert sorted(state["output_dict_per_obj"][0]["non_cond_frame_outputs"]) == list(range(9, 30))
    assert list(state["output_dict_per_obj"][0]["cond_frame_outputs"]) == [5]  # prompts always stay
    state = _state(list(range(0, 30)), cond=[])
    assert prune_behind(state, 3, keep=16, reverse=True) == 2 * 10  # 20..29 are more than 16 behind 3
    assert max(state["output_dict_per_obj"][1]["non_cond_frame_outputs"]) == 19


@pytest.mark.slow
def test_pruning_at_the_memory_reach_changes_no_output_and_closer_does(video_engine, monkeypatch):
    """A model reading 2 memories and 1 object pointer back reaches 3 frames: pruning 3 behind
    changes nothing bit for bit over 7 frames (frames do get dropped), pruning 0 behind does."""
    images, masks = moving_clip(7)
    predictor = video_engine.predictor
    monkeypatch.setattr(predictor, "num_maskmem", 3)
    monkeypatch.setattr(predictor, "max_obj_ptrs_in_encoder", 2)
    assert memory_reach(predictor) == 3
    dropped = []
    monkeypatch.setattr("rpsam2_backend.engine.video.tracker.prune_behind",
                        lambda *args, **kw: dropped.append(prune_behind(*args, **kw)))

    def run(keep: int) -> list[tuple[bytes, float, float]]:
        monkeypatch.setattr(video_engine, "keep", keep)
        frames = video_engine.propagate(images, 0, {1: masks[0]["Tool"]}, forward=6, min_confidence=0.0)
        # the mask and SAM2's two float scores: any change in what memory attention read shows here
        return [(np.packbits(f.objects[1].mask).tobytes(), f.objects[1].object_score, f.objects[1].iou)
                for f in frames]

    unpruned = run(1000)
    dropped.clear()
    at_reach = run(3)
    assert sum(dropped) == 2  # frames 1 and 2 left the state before the last frames were tracked
    too_close = run(0)
    assert len(unpruned) == 6 and at_reach == unpruned
    assert too_close[:2] == unpruned[:2] and too_close != unpruned  # differs once t-2 was dropped
