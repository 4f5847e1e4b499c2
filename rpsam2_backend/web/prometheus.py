"""Prometheus metrics of the web process (/metrics).

Click latency and job failures are measured where the web process sees them (a wrapper around
the dispatcher).  Cache hits/misses, encoder runs and queue lengths live in the workers and in
Redis: they are read at scrape time from the dispatcher's health(), i.e. from the presence
documents every worker refreshes each RPSAM2_WORKER_HEARTBEAT seconds (see queue/presence.py).
A dead worker's counters disappear with its presence key; Prometheus treats that as a reset.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import g, has_request_context
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from rpsam2_backend.core.errors import BackendError

CLICK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class _ScrapeCollector:
    """Reads queue lengths and worker counters at scrape time (one Redis round trip or so)."""

    def __init__(self, health: Callable[[], dict]) -> None:
        self.health = health

    def collect(self):
        h = self.health()
        up = GaugeMetricFamily("rpsam2_redis_up", "1 when Redis answers (RQ mode only)")
        if h.get("mode") == "rq":
            up.add_metric([], 1.0 if h.get("redis") == "up" else 0.0)
        yield up
        length = GaugeMetricFamily("rpsam2_queue_length", "jobs waiting in an RQ queue", labels=["queue"])
        failed = GaugeMetricFamily("rpsam2_queue_failed_jobs", "failed jobs kept", labels=["queue"])
        serving = GaugeMetricFamily("rpsam2_queue_workers", "live workers serving a queue", labels=["queue"])
        for name, q in (h.get("queues") or {}).items():
            length.add_metric([name], q["length"])
            failed.add_metric([name], q["failed"])
            serving.add_metric([name], q["workers"])
        yield from (length, failed, serving)
        hits = CounterMetricFamily("rpsam2_cache_hits", "embedding cache hits", labels=["worker"])
        misses = CounterMetricFamily("rpsam2_cache_misses", "embedding cache misses", labels=["worker"])
        encodes = CounterMetricFamily("rpsam2_encoder_runs", "image encoder runs", labels=["worker"])
        cache_bytes = GaugeMetricFamily("rpsam2_cache_bytes", "embedding cache size", labels=["worker"])
        for w in h.get("workers") or []:
            cache = w.get("cache") or {}
            hits.add_metric([w["name"]], cache.get("hits", 0))
            misses.add_metric([w["name"]], cache.get("misses", 0))
            encodes.add_metric([w["name"]], w.get("encodes", 0))
            cache_bytes.add_metric([w["name"]], cache.get("bytes", 0))
        yield from (hits, misses, encodes, cache_bytes)


class BackendMetrics:
    def __init__(self, health: Callable[[], dict]) -> None:
        # Own registry: create_app may run several times in one process (tests).
        self.registry = CollectorRegistry()
        self.click_seconds = Histogram(
            "rpsam2_click_seconds", "click latency seen by the web process", ["outcome"],
            buckets=CLICK_BUCKETS, registry=self.registry,
        )
        self.job_failures = Counter(
            "rpsam2_job_failures", "jobs that failed, by job and HTTP status", ["job", "status"],
            registry=self.registry,
        )
        self.registry.register(_ScrapeCollector(health))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MeteredDispatcher:
    """A Dispatcher that times clicks and counts failures; otherwise the one it wraps."""

    def __init__(self, inner, metrics: BackendMetrics, click_job: str) -> None:
        self.inner = inner
        self.metrics = metrics
        self.click_job = click_job

    def call(self, job: str, payload: dict, routing_key: str | None = None) -> dict:
        started = time.perf_counter()
        try:
            result = self.inner.call(job, payload, routing_key)
        except BackendError as exc:
            self._observe(job, started, "error")
            self.metrics.job_failures.labels(job.rpartition(".")[2], str(exc.status)).inc()
            raise
        elapsed = self._observe(job, started, "ok")
        if job == self.click_job and has_request_context() and isinstance(result, dict):
            # For the response's Server-Timing header: where a click's time went, per click.
            g.server_timing = {
                "dispatch": elapsed, "job": result.get("seconds"), "decode": result.get("decode_seconds"),
            }
        return result

    def _observe(self, job: str, started: float, outcome: str) -> float:
        elapsed = time.perf_counter() - started
        if job == self.click_job:
            self.metrics.click_seconds.labels(outcome).observe(elapsed)
        return elapsed

    def submit(self, job: str, payload: dict, routing_key: str | None = None) -> None:
        self.inner.submit(job, payload, routing_key)

    def warm(self) -> None:
        self.inner.warm()

    def health(self) -> dict:
        return self.inner.health()
