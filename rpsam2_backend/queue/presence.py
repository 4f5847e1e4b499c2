"""Which rpsam2 workers are alive right now and what they hold; sticky routing; abandoned jobs.

rq's own worker registration outlives a dead worker by ``worker_ttl + 60`` s (minutes), and a
``SimpleWorker`` sends no heartbeat while it runs a job, so rq cannot tell a killed worker from a
busy one quickly.  Each ``rpsam2-worker`` therefore publishes a small JSON document every
``RPSAM2_WORKER_HEARTBEAT`` seconds under ``rpsam2:worker:<name>`` with a TTL of a few beats.  The
key exists exactly while the worker lives (Redis expires it: no clocks are compared across
machines) and carries its queues, model versions and cache counters for /health and /metrics.

No torch here: the web process imports this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from rpsam2_backend.core.names import PRESENCE_INDEX, PRESENCE_PREFIX, PRESENCE_TTL_BEATS, SEGMENT_JOB

log = logging.getLogger(__name__)


def presence_key(name: str) -> str:
    return PRESENCE_PREFIX + name


def sticky_queue(click_queue: str, worker_name: str) -> str:
    """The worker's own click queue: clicks for the images whose embeddings it holds."""
    return f"{click_queue}@{worker_name}"


def publish(conn: redis.Redis, doc: dict, interval: float) -> None:
    name = doc["name"]
    with conn.pipeline(transaction=False) as pipe:
        ttl_ms = max(1000, int(interval * PRESENCE_TTL_BEATS * 1000))
        pipe.set(presence_key(name), json.dumps(doc, default=str), px=ttl_ms)
        pipe.sadd(PRESENCE_INDEX, name)
        pipe.execute()


def withdraw(conn: redis.Redis, name: str) -> None:
    with conn.pipeline(transaction=False) as pipe:
        pipe.delete(presence_key(name))
        pipe.srem(PRESENCE_INDEX, name)
        pipe.execute()


def is_alive(conn: redis.Redis, name: str) -> bool:
    return bool(conn.exists(presence_key(name)))


def live_workers(conn: redis.Redis) -> list[dict]:
    """Presence documents of the live workers, sorted by name."""
    names = sorted(n.decode() if isinstance(n, bytes) else n for n in conn.smembers(PRESENCE_INDEX))
    if not names:
        return []
    docs = conn.mget([presence_key(n) for n in names])
    gone = [n for n, doc in zip(names, docs, strict=True) if doc is None]
    if gone:  # a worker that is only late re-adds itself with its next heartbeat
        conn.srem(PRESENCE_INDEX, *gone)
    return [json.loads(doc) for doc in docs if doc is not None]


def pick_worker(routing_key: str, names: Iterable[str]) -> str | None:
    """Rendezvous (highest-random-weight) hashing: every web process picks the same worker for
    an image without sharing state, and a worker joining or leaving moves only the images that
    hash to it (about 1/n), so the other workers keep their cached embeddings."""

    def weight(name: str) -> bytes:
        return hashlib.blake2b(f"{name}\x00{routing_key}".encode(), digest_size=8).digest()

    return max(names, key=weight, default=None)


def abandoned_reason(worker: str, job_func: str | None) -> str:
    """What a caller waiting on a job its worker abandoned is told.  The web side (noticing the
    worker's presence key is gone) and a peer worker's reaper (failing the job) race to report
    the same death: both use this text, so the annotator reads the same message either way."""
    if job_func == SEGMENT_JOB:
        return (f"worker {worker} stopped while running this click (crashed or was killed); "
                "click again: the next click goes to a live worker")
    return f"worker {worker} died while running this job"


def fail_abandoned_job(conn: redis.Redis, job: Job, reason: str) -> None:
    """Move a job whose worker died out of 'started' into the failed registry (kept failure_ttl).

    The exception text follows BackendError's "[status] message" so a caller still waiting on
    the job gets a 503 with the reason."""
    registry = StartedJobRegistry(job.origin, connection=conn)
    ids = registry.get_job_and_execution_ids(cleanup=False)
    entries = [f"{jid}:{eid}" for jid, eid in ids if jid == job.id]
    exc_string = f"rpsam2_backend.errors.ServiceUnavailable: [503] {reason}"
    with conn.pipeline() as pipe:
        record_job_failure(job, exc_string, pipe)
        if entries:
            pipe.zrem(registry.key, *entries)
        pipe.execute()
    log.warning("job %s on %s failed as abandoned: %s", job.id, job.origin, reason)


def reap_abandoned(conn: redis.Redis, click_queue: str, queue_names: Iterable[str]) -> list[str]:
    """Fail jobs left 'started' by dead workers and drop the sticky queues of dead workers.

    rq does the first itself, but only ``job_timeout + 60`` s after the death and only on its
    maintenance tick (minutes).  The rpsam2 queues belong to rpsam2 workers, which all publish
    presence; a 'started' job whose worker has no presence key was abandoned.  Jobs still waiting
    in a dead worker's sticky queue move to the shared click queue (see ``_hand_over``)."""
    live = {w["name"] for w in live_workers(conn)}
    names = set(queue_names)
    sticky_prefix = sticky_queue(click_queue, "")
    for queue in Queue.all(connection=conn):
        if queue.name.startswith(sticky_prefix):
            names.add(queue.name)
    reaped = []
    for name in sorted(names):
        registry = StartedJobRegistry(name, connection=conn)
        for job_id, _ in registry.get_job_and_execution_ids(cleanup=False):
            try:
                job = Job.fetch(job_id, connection=conn)
            except NoSuchJobError:
                continue
            owner = job.worker_name
            if job.get_status(refresh=False) == JobStatus.STARTED and owner and owner not in live:
                fail_abandoned_job(conn, job, abandoned_reason(owner, job.func_name))
                reaped.append(job_id)
        owner = name[len(sticky_prefix):] if name.startswith(sticky_prefix) else None
        if owner and owner not in live:
            moved = _hand_over(conn, Queue(name, connection=conn), Queue(click_queue, connection=conn))
            Queue(name, connection=conn).delete(delete_jobs=False)
            log.info("dropped queue %s of dead worker %s (%d waiting job(s) moved to %s)",
                     name, owner, moved, click_queue)
    return reaped


def _hand_over(conn: redis.Redis, dead: Queue, shared: Queue) -> int:
    """Move the jobs waiting in a dead worker's sticky queue to the shared click queue.

    A web process may still be waiting for one of them: it notices the death on its own next
    poll and takes the job back with LREM.  LREM succeeds for exactly one party, so each job is
    either moved here (and its waiter gets the result from whichever worker runs it) or taken
    back there, never both and never lost."""
    moved = 0
    for job_id in dead.get_job_ids():
        if not conn.lrem(dead.key, 1, job_id):
            continue
        try:
            job = Job.fetch(job_id, connection=conn)
        except NoSuchJobError:
            continue  # expired (a stale pre-encode): nothing to run
        shared.enqueue_job(job)
        moved += 1
    return moved
