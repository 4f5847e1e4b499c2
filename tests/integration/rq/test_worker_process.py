"""One ``rpsam2-worker`` against a real redis-server: fail-fast start, heartbeat, the reaper."""

from __future__ import annotations

import os
import subprocess

import redis
from rq.job import Job, JobStatus
from rq.queue import Queue

from rpsam2_backend.core.names import SEGMENT_JOB
from rpsam2_backend.queue.presence import sticky_queue
from tests.support.rq_cluster import CLICK_QUEUE, WORKER_BIN, RedisServer


def test_worker_without_checkpoint_fails_fast_with_the_config_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPSAM2_")}
    env.update(REDIS_URL="redis://127.0.0.1:1/0", RPSAM2_CHECKPOINT_DIR=str(tmp_path))
    proc = subprocess.run([WORKER_BIN], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "No SAM2 checkpoint found" in proc.stderr and "make checkpoints" in proc.stderr


def test_worker_heartbeat_sets_last_heartbeat_and_ttl_through_a_pipeline(tmp_path, monkeypatch):
    from rq.utils import utcparse

    from rpsam2_backend.core.names import RQ_WORKER_TTL
    from rpsam2_backend.queue.worker import RPSAM2Worker

    server = RedisServer(tmp_path)
    server.start()
    try:
        conn = redis.Redis.from_url(server.url, socket_timeout=5)
        worker = RPSAM2Worker([Queue(CLICK_QUEUE, connection=conn)], name="hb", connection=conn,
                              worker_ttl=RQ_WORKER_TTL)  # constructed, never started
        assert conn.hget(worker.key, "last_heartbeat") is None
        direct = []  # commands sent one round trip each (pipelined ones bypass execute_command)
        sent = conn.execute_command
        monkeypatch.setattr(conn, "execute_command", lambda *a, **kw: direct.append(a[0]) or sent(*a, **kw))

        worker.heartbeat()
        assert direct == []
        stamp = conn.hget(worker.key, "last_heartbeat")
        assert stamp and utcparse(stamp.decode()) == worker.last_heartbeat
        assert 0 < conn.ttl(worker.key) <= RQ_WORKER_TTL + 60

        direct.clear()
        worker.heartbeat(timeout=30)
        assert direct == []
        assert utcparse(conn.hget(worker.key, "last_heartbeat").decode()) == worker.last_heartbeat
        assert 0 < conn.ttl(worker.key) <= 30

        # A caller's pipeline is used as it is: nothing reaches Redis before it executes.
        with conn.pipeline() as pipe:
            worker.heartbeat(timeout=500, pipeline=pipe)
            assert conn.ttl(worker.key) <= 30
            pipe.execute()
        assert 30 < conn.ttl(worker.key) <= 500
    finally:
        server.stop()


def test_reaper_hands_a_dead_workers_waiting_clicks_to_the_shared_queue(tmp_path):
    """A web process may still wait for a click queued behind a worker that died: the reaper
    moves it to the shared click queue instead of deleting it, unless the waiter took it back."""
    from rpsam2_backend.queue.presence import publish, reap_abandoned

    server = RedisServer(tmp_path)
    server.start()
    try:
        conn = redis.Redis.from_url(server.url, socket_timeout=5)
        publish(conn, {"name": "alive", "queues": [CLICK_QUEUE]}, 5.0)
        dead = Queue(sticky_queue(CLICK_QUEUE, "gone"), connection=conn)  # "gone" never published
        waiting = dead.enqueue(SEGMENT_JOB, {"image_url": "a.png", "clicks": []}, ttl=60)
        taken_back = dead.enqueue(SEGMENT_JOB, {"image_url": "b.png", "clicks": []}, ttl=60)
        assert conn.lrem(dead.key, 1, taken_back.id) == 1  # the waiter's own LREM won for this one

        assert reap_abandoned(conn, CLICK_QUEUE, [CLICK_QUEUE]) == []  # nothing was 'started'
        shared = Queue(CLICK_QUEUE, connection=conn)
        assert shared.get_job_ids() == [waiting.id]
        moved = Job.fetch(waiting.id, connection=conn)
        assert moved.origin == CLICK_QUEUE and moved.get_status() == JobStatus.QUEUED
        assert moved.args == ({"image_url": "a.png", "clicks": []},)
        assert not conn.exists(dead.key)
        assert dead.name not in [q.name for q in Queue.all(connection=conn)]
    finally:
        server.stop()
