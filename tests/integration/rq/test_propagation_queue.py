"""Propagation jobs on a real redis-server: two fixed ids per task, never two at once, newest last."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from rq import Queue, SimpleWorker, get_current_job
from rq.job import Job

from rpsam2_backend.core.names import propagate_job_ids
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.queue import propagation
from rpsam2_backend.queue.propagation import trigger_propagation
from tests.support.rpsam2_stack import start_redis

RELEASE_KEY = "test:propagation:release"
RUNS_KEY = "test:propagation:runs"


def recording_job(payload: dict, settings=None) -> str:
    """Stands in for the propagation job: records its start, blocks the first run until released."""
    conn = get_current_job().connection
    conn.rpush(RUNS_KEY, f"{payload['reason']}:start")
    if payload["reason"] == "first":
        deadline = time.monotonic() + 60
        while not conn.get(RELEASE_KEY) and time.monotonic() < deadline:
            time.sleep(0.05)
    conn.rpush(RUNS_KEY, f"{payload['reason']}:end")
    return payload["reason"]


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    proc, url = start_redis(tmp_path)
    try:
        yield url
    finally:
        proc.stop()


def test_a_submission_during_a_run_waits_for_it_and_a_third_adds_nothing(redis_url, monkeypatch):
    monkeypatch.setattr(propagation, "PROPAGATE_JOB", f"{__name__}.recording_job")
    settings = Settings.from_env({"REDIS_URL": redis_url, "RPSAM2_PROPAGATE_TIMEOUT": "120"})
    conn = redis.Redis.from_url(redis_url)
    first_id, next_id = propagate_job_ids("5", 9)

    first = trigger_propagation(settings, {"project": "5", "task": 9, "reason": "first"})
    assert first == {"enqueued": True, "job": first_id, "queue": "rpsam2-train"}
    waiting = trigger_propagation(settings, {"project": "5", "task": 9, "reason": "ignored"})
    assert waiting["enqueued"] is False and waiting["job"] == first_id and "already waiting" in waiting["reason"]
    assert Job.fetch(first_id, connection=conn).timeout == 120

    answers: dict[str, dict] = {}

    def web_side() -> None:  # what the web process does while the worker runs the first job
        deadline = time.monotonic() + 60
        while conn.lrange(RUNS_KEY, 0, -1) != [b"first:start"] and time.monotonic() < deadline:
            time.sleep(0.05)
        answers["second"] = trigger_propagation(settings, {"project": "5", "task": 9, "reason": "second"})
        answers["third"] = trigger_propagation(settings, {"project": "5", "task": 9, "reason": "third"})
        conn.set(RELEASE_KEY, 1)

    thread = threading.Thread(target=web_side)
    thread.start()
    queue = Queue(settings.queue.train_queue, connection=conn)
    SimpleWorker([queue], connection=conn).work(burst=True)  # rq's signal handlers need the main thread
    thread.join(10)

    assert answers["second"] == {"enqueued": True, "job": next_id, "queue": "rpsam2-train", "after": first_id}
    assert answers["third"]["enqueued"] is False and answers["third"]["job"] == next_id
    runs = [r.decode() for r in conn.lrange(RUNS_KEY, 0, -1)]
    assert runs == ["first:start", "first:end", "second:start", "second:end"]  # never side by side
    assert Job.fetch(next_id, connection=conn).return_value() == "second"

    # both finished: the next submission reuses the first id (its old record replaced)
    again = trigger_propagation(settings, {"project": "5", "task": 9, "reason": "again"})
    assert again == {"enqueued": True, "job": first_id, "queue": "rpsam2-train"}
    assert Job.fetch(first_id, connection=conn).args[0]["reason"] == "again"
