"""Frames of one video: data keys first, Cataract-1K / CaDIS file names otherwise; windows stop at gaps."""

from __future__ import annotations

import pytest

from rpsam2_backend.labelstudio.video_frames import (
    FrameRef,
    VideoFrameError,
    frame_from_file_name,
    frame_of,
    frame_or_none,
    propagation_window,
    video_step,
    video_tasks,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/data/upload/3/1a2b3c4d-case5013_01.png", FrameRef("case5013", 1)),
        ("/data/local-files/?d=cataract1k/case_5013/img/case5013_12.png", FrameRef("case5013", 12)),
        ("http://ls/data/local-files/?d=CaDIS%2FVideo01%2FImages%2FVideo1_frame000090.png", FrameRef("Video01", 90)),
        ("/data/upload/2/ffff0000-Video12_frame000450.png", FrameRef("Video12", 450)),
        ("/mnt/cadis/Video07/frames/left_frame0042.jpg", FrameRef("Video07", 42)),
        ("s3://bucket/surgery/case_0042_7.JPG", FrameRef("case0042", 7)),
        ("/data/upload/1/abc-voc.png", None),
        ("/data/upload/1/case5013_01.json", None),  # not an image
        ("/x/left_frame0042.png", None),  # a frame number but no VideoNN folder
    ],
)
def test_file_names_of_cataract1k_and_cadis(url, expected):
    assert frame_from_file_name(url) == expected


def test_data_keys_win_over_file_names_and_bad_values_are_named():
    task = {"id": 4, "data": {"image": "/data/upload/1/x-case5013_01.png", "clip": "left-eye", "t": "7"}}
    assert frame_of(task, "clip", "t", task["data"]["image"]) == FrameRef("left-eye", 7)
    assert frame_of(task) == FrameRef("case5013", 1)  # default keys absent: the file name speaks
    assert frame_of({"id": 5, "data": {"image": "/a.png"}}) is None
    with pytest.raises(VideoFrameError, match=r"task 6: data\['frame'\]='seven' is not an integer frame number"):
        frame_of({"id": 6, "data": {"video": "v", "frame": "seven"}})
    with pytest.raises(VideoFrameError, match=r"task 7 has data\['video'\] but no data\['frame'\]"):
        frame_of({"id": 7, "data": {"video": "v"}})
    with pytest.raises(VideoFrameError, match="is not an integer"):
        frame_of({"id": 8, "data": {"video": "v", "frame": 2.5}})
    assert frame_of({"id": 9, "data": {"video": 3, "frame": 4.0}}) == FrameRef("3", 4)
    assert frame_or_none({"id": 6, "data": {"video": "v", "frame": "seven"}}) is None  # lenient for grouping
    assert frame_or_none({"id": 6, "data": {"video": "v", "frame": "7"}}) == FrameRef("v", 7)


def _tasks(frames: dict[int, int], video: str = "v") -> list[dict]:
    """task id -> frame number, one video."""
    return [{"id": tid, "data": {"image": f"/{tid}.png", "video": video, "frame": f}} for tid, f in frames.items()]


def test_video_tasks_sorts_by_frame_and_refuses_a_frame_claimed_twice():
    tasks = _tasks({10: 3, 11: 1, 12: 2}) + _tasks({20: 1}, video="w") + [{"id": 30, "data": {"image": "/z.png"}}]
    assert [(f.task_id, f.frame) for f in video_tasks(tasks, "v")] == [(11, 1), (12, 2), (10, 3)]
    assert [f.task_id for f in video_tasks(tasks, "w")] == [20]
    with pytest.raises(VideoFrameError, match="tasks 10 and 13 are both frame 3 of video 'v'"):
        video_tasks(tasks + _tasks({13: 3}), "v")


def test_video_step_is_the_smallest_difference():
    assert video_step([1, 2, 3]) == 1
    assert video_step([90, 180, 270, 450]) == 90
    assert video_step([5]) == 1


def test_window_takes_n_frames_each_way_and_stops_at_the_end_or_a_gap():
    tasks = _tasks({101: 1, 102: 2, 103: 3, 104: 4, 105: 5, 106: 6})
    window = propagation_window(tasks, 101, forward=3)
    assert [f.task_id for f in window.forward] == [102, 103, 104] and window.backward == []
    assert window.video == "v" and window.stopped_forward == "reached 3 frames" and window.seed == 0
    window = propagation_window(tasks, 104, forward=5, backward=2)
    assert [f.task_id for f in window.forward] == [105, 106] and window.stopped_forward == "end of the video"
    assert [f.task_id for f in window.backward] == [103, 102] and window.stopped_backward == "reached 2 frames"
    assert [f.frame for f in window.frames] == [2, 3, 4, 5, 6] and window.seed == 2
    assert window.gaps == {}  # the end of the video is no gap

    gappy = _tasks({1: 90, 2: 180, 3: 270, 4: 450, 5: 540})  # 360 is missing
    window = propagation_window(gappy, 2, forward=4, backward=4)
    assert [f.frame for f in window.frames] == [90, 180, 270] and window.step == 90
    assert window.stopped_forward == "gap in the frame numbers after frame 270 (next is frame 450, step 90)"
    assert window.stopped_backward == "end of the video"
    assert window.gaps == {"forward": window.stopped_forward}
    window = propagation_window(gappy, 4, forward=1, backward=1)
    assert [f.frame for f in window.frames] == [450, 540]
    assert window.stopped_backward == "gap in the frame numbers after frame 450 (next is frame 270, step 90)"
    assert window.gaps == {"backward": window.stopped_backward}


def test_window_ends_before_the_next_labelled_frame_each_way():
    tasks = _tasks({101: 1, 102: 2, 103: 3, 104: 4, 105: 5, 106: 6})
    labelled = {101, 104}

    def annotated(task: dict) -> bool:
        return task["id"] in labelled

    window = propagation_window(tasks, 102, forward=3, backward=3, annotated=annotated)
    assert [f.task_id for f in window.forward] == [103] and window.stopped_forward == "frame 4 (task 104) is labelled"
    assert window.backward == [] and window.stopped_backward == "frame 1 (task 101) is labelled"
    labelled.add(102)  # the seed itself is labelled, of course: it does not stop its own window
    window = propagation_window(tasks, 104, forward=2, annotated=annotated)
    assert [f.task_id for f in window.forward] == [105, 106] and window.stopped_forward == "reached 2 frames"


def test_window_of_a_task_that_is_no_video_frame_or_not_in_the_project():
    tasks = _tasks({1: 1}) + [{"id": 2, "data": {"image": "/data/upload/1/abc-voc.png"}}]
    with pytest.raises(VideoFrameError, match="task 2 is not a frame of a known video") as err:
        propagation_window(tasks, 2, forward=3)
    assert "RPSAM2_VIDEO_KEY" in err.value.message and err.value.status == 422
    with pytest.raises(VideoFrameError, match="task 9 is not in the project") as err:
        propagation_window(tasks, 9, forward=3)
    assert err.value.status == 404


def test_window_by_file_names_through_an_image_url_getter():
    tasks = [{"id": 10 + k, "data": {"img": f"/data/upload/7/{k:08x}-case0001_{k:02d}.png"}} for k in (1, 2, 3)]
    window = propagation_window(tasks, 11, forward=2, image_url_of=lambda t: t["data"]["img"])
    assert window.video == "case0001" and [f.task_id for f in window.forward] == [12, 13]
    assert window.frames[1].image_url == "/data/upload/7/00000002-case0001_02.png"
