"""Inline (no Redis) propagation: one thread per task; a submission during a run runs after it."""

from __future__ import annotations

import threading

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
