"""Inline (no Redis) propagation: one thread per task; a submission during a run runs after it.
The video lock: an flock per (project, video) inline, a Redis lock with Redis."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from rpsam2_backend.core.settings import Settings
from rpsam2_backend.queue import propagation
from rpsam2_backend.queue.propagation import trigger_propagation, wait_for_inline_propagation


def test_one_thread_per_task_runs_the_newest_waiting_submission_after_the_running_one(tmp_path, monkeypatch):
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path)})
    release = threading.Event()
    ran: list[tuple] = []

    def fake_job(payload, settings):
        ran.append((payload["task"], payload["reason"]))
        if payload["reason"] == "first":
            assert release.wait(30)

    monkeypatch.setattr(propagation, "resolve_job", lambda name: fake_job)
    first = trigger_propagation(settings, {"project": "3", "task": 7, "reason": "first"})
    assert first == {"enqueued": True, "job": "rpsam2-propagate-3-7", "queue": "inline thread"}
    other_task = trigger_propagation(settings, {"project": "3", "task": 8, "reason": "other task"})
    assert "after" not in other_task  # another task has its own thread
    second = trigger_propagation(settings, {"project": "3", "task": 7, "reason": "second"})
    third = trigger_propagation(settings, {"project": "3", "task": 7, "reason": "third"})
    assert second["after"] == "the running propagation" and "replaced" not in second
    assert third["replaced"] == "an older waiting submission"
    release.set()
    assert wait_for_inline_propagation("3", 7, timeout_s=30) and wait_for_inline_propagation("3", 8, timeout_s=30)
    assert [r for r in ran if r[0] == 7] == [(7, "first"), (7, "third")]  # second was superseded while waiting
    assert (8, "other task") in ran
    # finished: the next submission starts a new thread at once
    assert "after" not in trigger_propagation(settings, {"project": "3", "task": 7, "reason": "later"})
    assert wait_for_inline_propagation("3", 7, timeout_s=30) and ran[-1] == (7, "later")


def test_a_failing_job_does_not_stop_the_waiting_one(tmp_path, monkeypatch):
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path)})
    release = threading.Event()
    ran: list[str] = []

    def fake_job(payload, settings):
        ran.append(payload["reason"])
        if payload["reason"] == "boom":
            release.wait(30)
            raise RuntimeError("injected")

    monkeypatch.setattr(propagation, "resolve_job", lambda name: fake_job)
    trigger_propagation(settings, {"project": "4", "task": 1, "reason": "boom"})
    trigger_propagation(settings, {"project": "4", "task": 1, "reason": "next"})
    release.set()
    assert wait_for_inline_propagation("4", 1, timeout_s=30)
    assert ran == ["boom", "next"]


def test_the_video_lock_is_per_project_and_video_inline(tmp_path):
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path)})
    other_took_it = threading.Event()

    def other(video: str) -> None:
        with propagation.propagation_video_lock(settings, "3", video):
            other_took_it.set()

    with propagation.propagation_video_lock(settings, "3", "case5013"):
        thread = threading.Thread(target=other, args=("case5014",), daemon=True)
        thread.start()
        assert other_took_it.wait(30)  # another video of the project is not held up
    thread.join(30)
    # released after a failure: the same video can be locked again at once
    with pytest.raises(RuntimeError), propagation.propagation_video_lock(settings, "3", "case5013"):
        raise RuntimeError("upload failed")
    other_took_it.clear()
    thread = threading.Thread(target=other, args=("case5013",), daemon=True)
    thread.start()
    assert other_took_it.wait(30)
    thread.join(30)


def test_the_video_lock_is_a_redis_lock_with_redis(monkeypatch):
    calls: list = []

    class FakeLock:
        def __init__(self, name, timeout, blocking_timeout):
            calls.append((name, timeout, blocking_timeout))
            self.free = True

        def acquire(self):
            calls.append("acquire")
            free, self.free = self.free, False
            return free

        def release(self):
            calls.append("release")

    monkeypatch.setattr(propagation, "connect", lambda url, timeout: SimpleNamespace(lock=FakeLock))
    settings = Settings.from_env({"REDIS_URL": "redis://redis.invalid:6379/0", "RPSAM2_PROPAGATE_TIMEOUT": "100"})
    with pytest.raises(RuntimeError), propagation.propagation_video_lock(settings, "3", "Video01"):
        raise RuntimeError("upload failed")
    # it expires a grace period after the job's timeout, a waiter gives up when its job would
    assert calls == [("rpsam2:propagate:video:3:Video01", 160, 100), "acquire", "release"]

    monkeypatch.setattr(FakeLock, "acquire", lambda self: False)
    with pytest.raises(TimeoutError, match="video 'Video01' of project 3 stayed locked"):
        with propagation.propagation_video_lock(settings, "3", "Video01"):
            pass
