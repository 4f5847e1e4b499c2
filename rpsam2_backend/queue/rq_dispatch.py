"""Jobs through RQ: enqueue by dotted name, wait for the result with a deadline, fail clearly.

The web process never imports torch here.  Every failure becomes a BackendError the web face
turns into an HTTP status: 503 when Redis or the worker is gone, 504 when no worker answered in
RPSAM2_PREDICT_TIMEOUT, the job's own status (4xx bad input, 5xx otherwise) when it raised.

Sticky routing: a click goes to the sticky queue ``<click queue>@<worker>`` of the live worker
chosen by rendezvous hashing of the image URL (see queue/presence.pick_worker), so the worker
that encoded an image gets every later click on it; with no live worker it goes to the shared
click queue, which every click worker also serves.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any

from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.results import Result

from rpsam2_backend.core.errors import (
    BackendError,
    JobTimeout,
    ServiceUnavailable,
    from_exception_text,
)
from rpsam2_backend.core.names import CLICK_POLL_S, CLICK_QUEUE_GRACE_S, PREENCODE_TTL_S, ROUTING_CACHE_S
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.queue.connection import REDIS_ERRORS, connect, mask_url
from rpsam2_backend.queue.presence import (
    abandoned_reason,
    fail_abandoned_job,
    is_alive,
    live_workers,
    pick_worker,
    sticky_queue,
)

log = logging.getLogger(__name__)


class RQDispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue = settings.queue
        self.where = mask_url(self.queue.redis_url)
        self.redis = connect(self.queue.redis_url, self.queue.redis_timeout)
        self._live: tuple[float, list[str]] = (float("-inf"), [])

    # --- Dispatcher protocol ------------------------------------------------------------------
    def call(self, job: str, payload: Any, routing_key: str | None = None) -> Any:
        try:
            return self._call(job, payload, routing_key)
        except REDIS_ERRORS as exc:
            raise self._redis_down(exc) from None

    def submit(self, job: str, payload: Any, routing_key: str | None = None) -> None:
        try:
            queue, _, live = self._route(routing_key)
            if live == 0:
                return  # a pre-encode for nobody: the first click gets the 503 that explains it
            Queue(queue, connection=self.redis).enqueue(
                job,
                payload,
                job_timeout=self.queue.job_timeout,
                result_ttl=0,  # nobody reads it: the embedding cache is the result
                failure_ttl=self.queue.failure_ttl,
                ttl=PREENCODE_TTL_S,
            )
        except REDIS_ERRORS as exc:
            log.warning("%s not queued: %s", job.rpartition(".")[2], self._redis_down(exc).message)

    def warm(self) -> None:
        """Nothing to load here: the workers hold SAM2."""

    def health(self) -> dict[str, Any]:
        base = {"mode": "rq", "redis_url": self.where}
        try:
            self.redis.ping()
            workers = live_workers(self.redis)
            names = {self.queue.click_queue, self.queue.train_queue}
            names.update(q for w in workers for q in w.get("queues", []))
            serving = Counter(q for w in workers for q in w.get("queues", []))
            queues = {
                name: {
                    "length": Queue(name, connection=self.redis).count,
                    "failed": FailedJobRegistry(name, connection=self.redis).count,
                    "workers": serving[name],
                }
                for name in sorted(names)
            }
        except REDIS_ERRORS as exc:
            return {**base, "redis": "down", "error": self._redis_down(exc).message}
        return {
            **base,
            "redis": "up",
            "queues": queues,
            "workers": workers,
            "model_versions": sorted({w["version"] for w in workers if w.get("version")}),
        }

    # --- internals ----------------------------------------------------------------------------
    def _redis_down(self, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"Redis at {self.where} is unreachable ({type(exc).__name__}: {exc}); "
            "clicks work again as soon as it is back"
        )

    def _click_workers(self, fresh: bool = False) -> list[str]:
        """Names of the live click workers; read from Redis at most every ROUTING_CACHE_S (two
        round trips per click otherwise), and always fresh when a decision depends on it."""
        stamp, names = self._live
        if fresh or time.monotonic() - stamp > ROUTING_CACHE_S:
            click = self.queue.click_queue
            names = [w["name"] for w in live_workers(self.redis) if click in w.get("queues", [])]
            self._live = (time.monotonic(), names)
        return names

    def _route(self, routing_key: str | None, fresh: bool = False) -> tuple[str, str | None, int]:
        """(queue, chosen worker or None, number of live click workers)."""
        workers = self._click_workers(fresh)
        if not workers and not fresh:  # confirm before refusing: a worker may have just started
            workers = self._click_workers(fresh=True)
        click = self.queue.click_queue
        chosen = pick_worker(routing_key, workers) if routing_key else None
        return (sticky_queue(click, chosen) if chosen else click), chosen, len(workers)

    def _no_worker(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"no rpsam2-worker is serving queue '{self.queue.click_queue}' on {self.where} "
            f"(start one with `rpsam2-worker`)"
        )

    def _enqueue(
        self, job: str, payload: Any, routing_key: str | None, fresh: bool = False
    ) -> tuple[Job, str, str | None, int]:
        queue_name, chosen, live = self._route(routing_key, fresh)
        if live == 0:
            # Nobody would run it: answer now rather than after RPSAM2_PREDICT_TIMEOUT.
            raise self._no_worker()
        # One transaction: without a pipeline rq registers the queue in a round trip of its own.
        with self.redis.pipeline() as pipe:
            rq_job = Queue(queue_name, connection=self.redis).enqueue(
                job,
                payload,
                job_timeout=self.queue.job_timeout,
                result_ttl=self.queue.result_ttl,
                failure_ttl=self.queue.failure_ttl,
                # Safety net if this process dies while waiting: the job leaves the queue by itself.
                ttl=math.ceil(self.queue.predict_timeout) + CLICK_QUEUE_GRACE_S,
                pipeline=pipe,
            )
            pipe.execute()
        return rq_job, queue_name, chosen, live

    def _call(self, job: str, payload: Any, routing_key: str | None) -> Any:
        deadline = time.monotonic() + self.queue.predict_timeout
        rq_job, queue_name, chosen, live = self._enqueue(job, payload, routing_key)
        timeout = self.queue.redis_timeout
        poll = min(CLICK_POLL_S, timeout / 2) if timeout > 0 else CLICK_POLL_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._give_up(rq_job, queue_name, live)
            result_key = Result.get_key(rq_job.id)
            streams = self.redis.xread({result_key: "0-0"}, block=max(1, int(min(remaining, poll) * 1000)))
            if streams:
                # The entry XREAD returned is the result itself: no second read of the stream.
                result_id, fields = streams[0][1][-1]
                result = Result.restore(rq_job.id, result_id.decode(), fields, connection=self.redis,
                                        serializer=rq_job.serializer)
                return self._outcome(rq_job, result)
            if self._check_worker(rq_job, queue_name, chosen):
                log.info("worker %s is gone; click job %s moves to a live worker", chosen, rq_job.id)
                rq_job, queue_name, chosen, live = self._enqueue(job, payload, routing_key, fresh=True)

    def _outcome(self, rq_job: Job, result: Result) -> Any:
        if result.type == Result.Type.SUCCESSFUL:
            value = result.return_value
            if not isinstance(value, dict):
                raise BackendError(f"job {rq_job.func_name} returned {type(value).__name__}, not a dict")
            return {**value, "worker": result.worker_name}
        if result.type == Result.Type.FAILED:
            text = result.exc_string or ""
            last = text.strip().splitlines()[-1] if text.strip() else ""
            if "JobTimeoutException" in last:
                err: BackendError = JobTimeout(
                    f"the job ran longer than RPSAM2_JOB_TIMEOUT={self.queue.job_timeout} s on worker "
                    f"{result.worker_name} and was stopped"
                )
            else:
                err = from_exception_text(text)
            log.warning("job %s failed on %s: %s", rq_job.id, result.worker_name or "?", err)
            raise err
        raise BackendError(f"job {rq_job.id} ended as {Result.Type(result.type).name.lower()}")

    def _check_worker(self, rq_job: Job, queue_name: str, chosen: str | None) -> bool:
        """Raise when the job's worker died with it; True when the job must move to another queue."""
        status, worker = self.redis.hmget(rq_job.key, "status", "worker_name")
        if status is None:
            raise ServiceUnavailable("the click's job vanished from Redis (Redis restarted?); click again")
        if status == b"started" and worker and not is_alive(self.redis, worker.decode()):
            name = worker.decode()
            rq_job.refresh()
            reason = abandoned_reason(name, rq_job.func_name)
            fail_abandoned_job(self.redis, rq_job, reason)
            raise ServiceUnavailable(reason)
        if status == b"queued" and chosen and not is_alive(self.redis, chosen):
            # Waiting in the sticky queue of a worker that is gone: nobody will ever run it
            # there.  LREM succeeds for exactly one party, so a late worker cannot run it twice.
            if self.redis.lrem(Queue(queue_name, connection=self.redis).key, 1, rq_job.id):
                rq_job.delete(remove_from_queue=False)
                return True
        return False

    def _give_up(self, rq_job: Job, queue_name: str, live: int) -> Any:
        timeout = self.queue.predict_timeout
        result = rq_job.latest_result()  # it may have landed just now
        if result is not None:
            return self._outcome(rq_job, result)
        status, worker = self.redis.hmget(rq_job.key, "status", "worker_name")
        if status == b"started":
            # Let it finish: the embedding it computes serves the next click on this image.
            raise JobTimeout(
                f"worker {(worker or b'?').decode()} did not finish the click within "
                f"RPSAM2_PREDICT_TIMEOUT={timeout:g} s (the first click on an image runs the encoder)"
            )
        # Never started: take it back so that a worker arriving late does not waste time on it.
        ahead = Queue(queue_name, connection=self.redis).get_job_position(rq_job.id)
        rq_job.delete(remove_from_queue=True)
        if live == 0:
            raise ServiceUnavailable(f"{self._no_worker().message}; the click waited {timeout:g} s")
        raise JobTimeout(
            f"no worker started the click within RPSAM2_PREDICT_TIMEOUT={timeout:g} s: "
            f"{live} worker(s) alive but busy, {ahead or 0} job(s) still ahead of it on '{queue_name}'"
        )
