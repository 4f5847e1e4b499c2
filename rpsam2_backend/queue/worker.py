"""`rpsam2-worker` (or `python -m rpsam2_backend.queue.worker`): the warm GPU worker behind RQ.

Loads SAM2, the shift block and the embedding cache once, then runs jobs **in this process**
(an rq ``SimpleWorker``): rq's default ``Worker`` forks a child per job, which either reloads
the model or breaks CUDA ("Cannot re-initialize CUDA in forked subprocess"), and here it even
hangs once the parent has run a torch op (seen with rq 3.0 on this project's CI machine).

This module imports no torch: it resolves the job layer's runtime by dotted name
(``core.names.LOAD_WORKER_RUNTIME``), like every job.

Queues, in priority order: the worker's own sticky queue ``<click queue>@<name>`` (clicks on
images whose embeddings it holds), the shared click queue, then any others; the training queue
always last, so that a waiting click beats a waiting retrain.  A worker serves what
``--queues`` / RPSAM2_WORKER_QUEUES names (``click``, ``train``, or literal queue names).
Run training on a separate worker when clicks must never wait behind a running retrain.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from typing import Any

import redis
from rq.job import Job, JobStatus, Retry
from rq.results import Result
from rq.utils import now
from rq.worker import SimpleWorker

from rpsam2_backend.core.contracts import RuntimeStats
from rpsam2_backend.core.errors import ConfigError
from rpsam2_backend.core.names import (
    LOAD_WORKER_RUNTIME,
    PRESENCE_TTL_BEATS,
    RQ_WORKER_TTL,
    SEGMENT_JOB,
    WORKER_RUNTIME_STATS,
)
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.queue.dispatch import resolve_job
from rpsam2_backend.queue.presence import (
    is_alive,
    publish,
    reap_abandoned,
    sticky_queue,
    withdraw,
)

log = logging.getLogger("rpsam2_backend.worker")


def queue_names(spec: str, settings: Settings, name: str) -> list[str]:
    aliases = {"click": settings.queue.click_queue, "train": settings.queue.train_queue}
    asked = [aliases.get(part.strip(), part.strip()) for part in spec.split(",") if part.strip()]
    if not asked:
        raise ConfigError(f"no queue to serve in --queues / RPSAM2_WORKER_QUEUES={spec!r} (use click,train)")
    ordered = [sticky_queue(settings.queue.click_queue, name)] if settings.queue.click_queue in asked else []
    ordered += [q for q in asked if q != settings.queue.train_queue]
    ordered += [settings.queue.train_queue] if settings.queue.train_queue in asked else []
    return list(dict.fromkeys(ordered))


def default_name() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"
    return f"{host}.{os.getpid()}"


class RPSAM2Worker(SimpleWorker):
    """SimpleWorker that knows its current job and reaps jobs abandoned by dead workers."""

    click_queue = ""
    # rq blocks in dequeue for worker_ttl - 15 s and only runs maintenance in between; an idle
    # worker must wake up about once per presence lifetime to reap a dead peer's job promptly.
    idle_wakeup = 10

    @property
    def dequeue_timeout(self) -> int:
        return self.idle_wakeup

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.current_job: str | None = None
        self.counts = {"ok": 0, "failed": 0}  # shared across restarts of the loop by serve()

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        # Without a pipeline rq sends the heartbeat's three commands one round trip each, twice
        # around every job; one round trip instead (a click waits for the first one).
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipe)
            pipe.execute()

    def _finalize_success(self, job: Job, queue, execution, return_value) -> None:
        # A click's web request waits only for the result.  rq writes it at the end of its
        # bookkeeping (heartbeat, dependents WATCH, registries: four round trips and its own
        # Python); a click's result goes out first, then rq does the rest as usual (which writes
        # the same value again: the result stream holds it twice, for RPSAM2_RESULT_TTL).
        if job.func_name == SEGMENT_JOB and not isinstance(return_value, Retry):
            ttl = job.get_result_ttl(self.default_result_ttl)
            if ttl != 0:
                Result.create(job, Result.Type.SUCCESSFUL, ttl=ttl, return_value=return_value,
                              worker_name=self.name, execution_id=execution.id,
                              execution_started_at=execution.created_at, execution_ended_at=now())
        super()._finalize_success(job, queue, execution, return_value)

    def execute_job(self, job, queue) -> None:
        self.current_job = job.id
        try:
            super().execute_job(job, queue)
        finally:
            self.current_job = None
            self.counts["ok" if job.get_status(refresh=False) == JobStatus.FINISHED else "failed"] += 1

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        reaped = reap_abandoned(self.connection, self.click_queue, self.queue_names())
        if reaped:
            self.log.warning("Worker %s: failed %d job(s) abandoned by dead workers", self.name, len(reaped))


class Presence(threading.Thread):
    """Publishes this worker's presence document every ``interval`` s, also while a job runs."""

    def __init__(self, url: str, interval: float, describe) -> None:
        super().__init__(name="rpsam2-presence", daemon=True)
        self.conn = redis.Redis.from_url(url, socket_timeout=max(2.0, interval), socket_connect_timeout=2.0)
        self.interval = interval
        self.describe = describe
        self.stopping = threading.Event()
        self.failing = False
        self.published = False

    def beat(self) -> None:
        try:
            publish(self.conn, self.describe(), self.interval)
            self.published = True
            if self.failing:
                log.info("presence: Redis reachable again")
            self.failing = False
        except redis.exceptions.RedisError as exc:
            if not self.failing:  # once per outage, not every beat
                log.warning("presence: cannot reach Redis (%s); retrying every %g s", exc, self.interval)
            self.failing = True

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.beat()

    def stop(self, name: str) -> None:
        self.stopping.set()
        if not self.published:
            return  # never announced: the name may belong to another live worker
        try:
            withdraw(self.conn, name)
        except redis.exceptions.RedisError:
            pass  # the key expires by itself


def load_runtime(settings: Settings) -> Any:
    """Build SAM2 + shift block + cache once (in the job layer); ConfigError when the checkpoint is missing."""
    return resolve_job(LOAD_WORKER_RUNTIME)(settings)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rpsam2-worker", description="RP-SAM2 worker (RQ, in-process jobs)")
    parser.add_argument("--queues", help="comma list: click, train or queue names (RPSAM2_WORKER_QUEUES)")
    parser.add_argument("--name", help="worker name, unique among live workers (default HOST.PID)")
    parser.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    parser.add_argument(
        "--scheduler", action=argparse.BooleanOptionalAction, default=None,
        help="run rq's scheduler (enqueue_in/enqueue_at jobs, e.g. periodic retraining); "
        "default: on when this worker serves the training queue",
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="[%(asctime)s] [%(levelname)s] [%(name)s] %(message)s"
    )
    try:
        settings = Settings.from_env()
        if not settings.queue.redis_url:
            raise ConfigError("REDIS_URL is not set: a worker takes its jobs from Redis")
        name = args.name or default_name()
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
            raise ConfigError(f"--name {name!r}: use letters, digits and _ . : - only")
        queues = queue_names(args.queues or settings.queue.worker_queues, settings, name)
        runtime = load_runtime(settings)
    except ConfigError as exc:
        print(f"rpsam2-worker: cannot start: {exc.message}", file=sys.stderr)
        sys.exit(2)
    stats = runtime_summary(runtime)
    log.info(
        "worker %s ready: device=%s config=%s checkpoint=%s shift=%s decoder=%s version=%s queues=%s",
        name, stats["device"], stats["config"], stats["checkpoint"],
        stats["shift_version"] or "none (plain SAM2)", stats["decoder_version"] or "SAM2's own",
        stats["version"], ",".join(queues),
    )
    scheduler = settings.queue.train_queue in queues if args.scheduler is None else args.scheduler
    sys.exit(serve(settings, name, queues, runtime, args.burst, args.log_level.upper(), scheduler))


def runtime_summary(runtime: Any) -> RuntimeStats:
    return resolve_job(WORKER_RUNTIME_STATS)(runtime)


def serve(
    settings: Settings,
    name: str,
    queues: list[str],
    runtime,
    burst: bool = False,
    log_level: str = "INFO",
    scheduler: bool = False,
) -> int:
    """Run the rq loop until SIGTERM/SIGINT (or empty queues with ``burst``); 0 on a clean stop.

    ``scheduler``: rq's scheduler runs in a forked child that only talks to Redis (no torch), and
    a lock lets one scheduler per queue run however many workers ask for it.

    rq's loop quits when Redis fails at the wrong moment; a GPU worker keeps its model and starts
    a fresh loop once Redis is back instead of dying (and reloading SAM2 under a supervisor)."""
    conn = redis.Redis.from_url(settings.queue.redis_url)
    counts = {"ok": 0, "failed": 0}
    started = time.time()
    worker: RPSAM2Worker | None = None

    def describe() -> dict:
        current = worker.current_job if worker else None
        return {
            "name": name,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "queues": queues,
            "started_at": started,
            "state": "busy" if current else "idle",
            "job": current,
            "jobs_ok": counts["ok"],
            "jobs_failed": counts["failed"],
            **runtime_summary(runtime),
        }

    # Reap abandoned jobs about when a dead worker's presence key has expired.
    maintenance_every = max(5, int(PRESENCE_TTL_BEATS * settings.queue.worker_heartbeat))
    stopping = threading.Event()
    presence = Presence(settings.queue.redis_url, settings.queue.worker_heartbeat, describe)
    first, backoff = True, 1.0
    try:
        while not stopping.is_set():
            loop_started, worker = time.monotonic(), None
            try:
                if first and is_alive(conn, name):
                    log.error("a worker named %s is already running; choose another --name", name)
                    return 1
                first = False
                worker = RPSAM2Worker(  # talks to Redis already (CLIENT SETNAME)
                    queues, name=name, connection=conn, default_result_ttl=settings.queue.result_ttl,
                    worker_ttl=RQ_WORKER_TTL, maintenance_interval=maintenance_every,
                    log_job_description=False,  # job arguments hold image URLs, maybe signed ones
                )
                worker.click_queue, worker.counts = settings.queue.click_queue, counts
                worker.idle_wakeup = maintenance_every
                # A worker of this name that crashed left rq's registration behind; it is dead
                # (no presence key), so this one takes the name over.
                conn.delete(worker.key)
                presence.beat()
                if not presence.is_alive():
                    presence.start()
                worker.work(burst=burst, logging_level=log_level, with_scheduler=scheduler)
            except redis.exceptions.RedisError as exc:
                log.warning("worker %s: Redis failed (%s); starting again in %g s", name, exc, backoff)
                try:
                    if worker is not None:
                        worker.unsubscribe()
                except Exception:  # the pubsub thread may already be gone
                    pass
            # rq left its signal handlers installed; from here a signal only means stop.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stopping.set())
            if worker is not None and (burst or worker._shutdown_requested_date is not None):
                return 0
            backoff = 1.0 if time.monotonic() - loop_started > 30 else min(backoff * 2, 10.0)
            stopping.wait(backoff)
        return 0
    finally:
        presence.stop(name)
        log.info("worker %s stopped", name)


if __name__ == "__main__":
    main()
