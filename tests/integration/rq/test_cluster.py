"""The RQ path against a real redis-server and real `rpsam2-worker` processes (random-weight hiera_t).

One Redis, one web app (real HTTP server) and two workers per module: starting a worker costs
~15 s of torch import and model build here, so the tests run in file order and share them.  The
last tests kill workers, stop Redis and stop the last worker; they start what they need.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import requests
from label_studio_sdk.converter.brush import decode_rle
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry

from rpsam2_backend.core.errors import BackendError, ServiceUnavailable
from rpsam2_backend.core.names import PREENCODE_JOB, SEGMENT_JOB
from rpsam2_backend.labelstudio.brush import rle_to_mask
from rpsam2_backend.queue.presence import is_alive, pick_worker, sticky_queue
from rpsam2_backend.queue.rq_dispatch import RQDispatcher
from tests.support.rq_cluster import (
    CLICK_QUEUE,
    FAILURE_TTL,
    PREDICT_TIMEOUT,
    REDIS_SERVER,
    RESULT_TTL,
    Cluster,
    wait_for,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is not installed (`make redis` installs it)")
    c = Cluster(tmp_path_factory.mktemp("rq"))
    try:
        c.start_workers("wa", "wb", queues={"wb": "click,train"})
        c.start_web()
        yield c
    finally:
        c.close()


def mask_of(resp: requests.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"][0]["result"][0]
    h, w = result["original_height"], result["original_width"]
    return decode_rle(result["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0


def urls_for(cluster: Cluster, worker: str, n: int, used: set[str], among: list[str]) -> list[str]:
    """n unused images that rendezvous hashing sends to ``worker`` among the live ``among``."""
    found = [u for u in cluster.images if u not in used and pick_worker(u, among) == worker][:n]
    assert len(found) == n, f"not enough test images hash to {worker}"
    used.update(found)
    return found


USED: set[str] = set()


def started_job(cluster: Cluster, queue: str, url: str) -> str | None:
    """The id of the job for ``url`` that a worker is running from ``queue``, if any."""
    registry = StartedJobRegistry(queue, connection=cluster.conn)
    for job_id, _ in registry.get_job_and_execution_ids(cleanup=False):
        if Job.fetch(job_id, connection=cluster.conn).args[0]["image_url"] == url:
            return job_id
    return None


def queued_job(cluster: Cluster, queue: str, url: str) -> str | None:
    jobs = Queue(queue, connection=cluster.conn).get_jobs()
    return next((j.id for j in jobs if j.args[0]["image_url"] == url), None)


def test_click_round_trip_through_http_and_results_expire(cluster):
    url = cluster.images[0]
    USED.add(url)
    resp = cluster.click(url, 40.0, 55.0)
    mask = mask_of(resp)
    assert mask.shape == (240, 320) and 0 < mask.sum() < mask.size
    assert "RANDOM-WEIGHTS" in resp.json()["model_version"]
    result_keys = cluster.conn.keys("rq:results:*")
    assert result_keys
    for key in result_keys:  # the result and the job hash expire with RPSAM2_RESULT_TTL
        assert 0 < cluster.conn.ttl(key) <= RESULT_TTL
        job_key = key.decode().replace("rq:results:", "rq:job:")
        assert 0 < cluster.conn.ttl(job_key) <= RESULT_TTL


def test_health_and_metrics_report_redis_workers_queues_and_cache(cluster):
    cluster.click(cluster.images[0], 60.0, 50.0)  # a cache hit on whichever worker holds img00
    body = requests.get(f"{cluster.base}/health", timeout=10).json()
    assert body["status"] == "UP" and body["redis"] == "up"
    assert {w["name"] for w in body["dispatch"]["workers"]} == {"wa", "wb"}
    assert body["live_workers"][CLICK_QUEUE] == 2 and body["live_workers"]["rpsam2-train"] == 1
    assert body["live_workers"][sticky_queue(CLICK_QUEUE, "wa")] == 1
    assert any("RANDOM-WEIGHTS" in v for v in body["model_versions"])

    def scraped() -> str | None:
        text = requests.get(f"{cluster.base}/metrics", timeout=10).text
        hits = [line for line in text.splitlines() if line.startswith("rpsam2_cache_hits_total{")]
        return text if sum(float(line.split()[-1]) for line in hits) >= 1 else None

    text = wait_for(scraped, 10, "a cache hit reported by a worker")
    counts = [line for line in text.splitlines() if line.startswith('rpsam2_click_seconds_count{outcome="ok"}')]
    assert counts and float(counts[0].split()[-1]) >= 1
    assert f'rpsam2_queue_length{{queue="{CLICK_QUEUE}"}} 0.0' in text
    assert 'rpsam2_encoder_runs_total{worker="wa"}' in text and "rpsam2_redis_up 1.0" in text


def test_sticky_routing_runs_the_encoder_once_per_image(cluster):
    names = cluster.live_names()
    encodes_before = {n: cluster.presence(n)["encodes"] for n in names}
    images = {w: urls_for(cluster, w, 1, USED, names)[0] for w in names}
    seen = []
    for x, y in [(30.0, 30.0), (60.0, 40.0), (45.0, 70.0)]:
        for worker, url in images.items():
            result = cluster.call(url, x, y)
            seen.append((worker, result["worker"], result["encoded"]))
            # The job's RLE crosses Redis as bytes (restored from the XREAD entry), with its timings.
            assert type(result["rle"]) is bytes
            assert rle_to_mask(result["rle"], 240, 320).sum() == result["area"]
            assert 0 < result["decode_seconds"] <= result["seconds"]
    assert all(expected == answered for expected, answered, _ in seen)
    assert [encoded for *_, encoded in seen] == [True, True] + [False] * 4
    cluster.cached_on = images

    def counted() -> dict | None:
        now = {n: cluster.presence(n) for n in names}
        return now if all(now[n]["encodes"] - encodes_before[n] >= 1 for n in names) else None

    now = wait_for(counted, 10, "presence documents to show the encodes")
    assert {n: now[n]["encodes"] - encodes_before[n] for n in names} == {n: 1 for n in names}


def test_preencode_on_task_open_makes_the_first_click_cached(cluster):
    url = urls_for(cluster, "wa", 1, USED, cluster.live_names())[0]
    before = cluster.presence("wa")["encodes"]
    resp = cluster.open_task(url)  # Label Studio asks for predictions when a task opens
    assert resp.status_code == 200 and resp.json()["results"] == []
    result = cluster.call(url, 50.0, 50.0)  # queued behind the pre-encode on the same worker
    assert result["worker"] == "wa" and result["encoded"] is False
    wait_for(lambda: cluster.presence("wa")["encodes"] == before + 1, 10, "wa to report one encode")


def test_job_errors_reach_http_and_the_failed_registry_with_failure_ttl(cluster):
    missing = "/data/local-files/?d=no-such-image.png"
    resp = cluster.click(missing, 50.0, 50.0)
    assert 400 <= resp.status_code < 500, resp.text
    assert "not found" in resp.text
    queue = sticky_queue(CLICK_QUEUE, pick_worker(missing, cluster.live_names()))
    failed = FailedJobRegistry(queue, connection=cluster.conn).get_job_ids()
    assert len(failed) == 1
    assert RESULT_TTL < cluster.conn.ttl(f"rq:job:{failed[0]}") <= FAILURE_TTL
    assert RESULT_TTL < cluster.conn.ttl(f"rq:results:{failed[0]}") <= FAILURE_TTL

    # A BadRequest raised inside the job keeps its status; any other exception is a 500.
    cached = cluster.images[0]  # routed to the worker holding its embedding: no encode needed
    with pytest.raises(BackendError) as bad:
        cluster.state.dispatcher.call(SEGMENT_JOB, {"image_url": cached, "clicks": []}, cached)
    assert bad.value.status == 400 and "no clicks" in bad.value.message
    with pytest.raises(BackendError) as crash:
        cluster.state.dispatcher.call(SEGMENT_JOB, None, "x")
    assert crash.value.status == 500 and "AttributeError" in crash.value.message


def test_click_with_no_worker_on_its_queue_gets_503_at_once(cluster):
    timeout = 60.0
    lonely = RQDispatcher(cluster.settings.with_("queue", click_queue="rpsam2-nobody", predict_timeout=timeout))
    jobs_before = set(cluster.conn.scan_iter("rq:job:*"))
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as err:
        lonely.call(SEGMENT_JOB, {"image_url": cluster.images[0], "clicks": [{"x": 5, "y": 5}]}, "k")
    assert time.monotonic() - started < timeout  # it did not wait for RPSAM2_PREDICT_TIMEOUT
    assert "no rpsam2-worker is serving queue 'rpsam2-nobody'" in err.value.message
    # Nothing was enqueued: no job a late worker could run, nothing that waited.
    assert Queue("rpsam2-nobody", connection=cluster.conn).count == 0
    assert set(cluster.conn.scan_iter("rq:job:*")) == jobs_before
    lonely.submit(PREENCODE_JOB, {"image_url": cluster.images[0]}, "k")  # a pre-encode for nobody is dropped
    assert Queue("rpsam2-nobody", connection=cluster.conn).count == 0


def test_twenty_concurrent_clicks_on_four_images_match_one_at_a_time(cluster):
    names = cluster.live_names()
    images = [u for n in names for u in urls_for(cluster, n, 4 // len(names), USED, names)]
    clicks = [(url, 15.0 + 17.0 * k, 20.0 + 13.0 * k) for url in images for k in range(5)]
    with ThreadPoolExecutor(max_workers=len(clicks)) as pool:
        concurrent = list(pool.map(lambda c: cluster.click(*c), clicks))
    assert [r.status_code for r in concurrent] == [200] * len(clicks), [r.text for r in concurrent]
    one_by_one = [cluster.click(*c) for c in clicks]
    for c, a, b in zip(clicks, concurrent, one_by_one, strict=True):
        assert np.array_equal(mask_of(a), mask_of(b)), c
    assert len({mask_of(r).tobytes() for r in concurrent}) > 1  # different clicks, different masks


def test_promoted_shift_block_reaches_running_workers(cluster):
    from rpsam2_backend.engine.checkpoint_store import CheckpointStore
    from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig

    block_dir = cluster.tmp / "shift-candidate"
    ShiftBlock(ShiftBlockConfig(layers=1, ffn_dim=256)).save(block_dir)
    store = CheckpointStore(cluster.settings.model.model_dir, "shift")
    name = store.add(block_dir)
    store.promote(name, reason="test")
    try:
        resp = cluster.click(cluster.images[0], 50.0, 50.0)
        assert resp.status_code == 200, resp.text
        assert f"shift-{name}" in resp.json()["model_version"]
    finally:
        store.rollback("test done")
    resp = cluster.click(cluster.images[0], 50.0, 50.0)
    assert resp.json()["model_version"].startswith("sam2/")


def test_training_queue_runs_scheduled_jobs_on_the_training_worker_only(cluster):
    url = getattr(cluster, "cached_on", {}).get("wb", cluster.images[0])
    train = Queue(cluster.settings.queue.train_queue, connection=cluster.conn)
    # Periodic retraining uses enqueue_in: the worker serving the training queue runs rq's scheduler.
    job = train.enqueue_in(timedelta(seconds=1), PREENCODE_JOB, {"image_url": url}, result_ttl=RESULT_TTL)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, 60, "the scheduled job to run")
    assert job.latest_result().worker_name == "wb"  # wa does not serve the training queue


def test_worker_killed_mid_job_gives_a_clear_error_and_the_queue_keeps_moving(cluster):
    names = cluster.live_names()
    first, behind = urls_for(cluster, "wa", 2, USED, names)
    sticky_a = sticky_queue(CLICK_QUEUE, "wa")
    started_a = StartedJobRegistry(sticky_a, connection=cluster.conn)
    answers: dict[str, tuple[requests.Response, float]] = {}

    def click(key: str, url: str) -> None:
        resp = cluster.click(url, 50.0, 50.0)
        answers[key] = (resp, time.monotonic())

    threads = [threading.Thread(target=click, args=("first", first))]
    threads[0].start()
    job_id = wait_for(lambda: started_job(cluster, sticky_a, first), 30, "wa to start encoding")
    threads.append(threading.Thread(target=click, args=("behind", behind)))
    threads[1].start()
    wait_for(lambda: queued_job(cluster, sticky_a, behind), 10, "a click queued behind it")
    killed_at = time.monotonic()
    cluster.workers["wa"].kill(signal.SIGKILL)
    for t in threads:
        t.join(timeout=PREDICT_TIMEOUT + 40)

    resp, answered_at = answers["first"]
    assert resp.status_code == 503, f"{resp.text}\n{cluster.workers['wa'].tail()}"
    assert "wa stopped while running this click" in resp.json()["detail"]
    assert answered_at - killed_at < 20  # noticed from the presence key, not at the 60 s timeout
    # The abandoned job is failed (kept failure_ttl), not left 'started' forever.
    assert not started_a.get_job_and_execution_ids(cleanup=False)
    assert job_id in FailedJobRegistry(sticky_a, connection=cluster.conn).get_job_ids()
    # The click waiting behind it moved to the live worker instead of timing out.
    assert mask_of(answers["behind"][0]).any()
    assert cluster.live_names() == ["wb"]

    # The last worker dies while pre-encoding (nobody waits for that job) ...
    orphan_url = urls_for(cluster, "wb", 1, USED, ["wb"])[0]
    sticky_b = sticky_queue(CLICK_QUEUE, "wb")
    started_b = StartedJobRegistry(sticky_b, connection=cluster.conn)
    assert cluster.open_task(orphan_url).status_code == 200
    orphan_id = wait_for(lambda: started_job(cluster, sticky_b, orphan_url), 30, "wb to start the pre-encode")
    cluster.workers["wb"].kill(signal.SIGKILL)
    # ... and a new worker fails that job at start-up and serves the next clicks.
    cluster.start_workers("wc")
    orphan = Job.fetch(orphan_id, connection=cluster.conn)
    wait_for(lambda: orphan.get_status(refresh=True) == JobStatus.FAILED, 30, "the orphaned job to be failed")
    assert not started_b.get_job_and_execution_ids(cleanup=False)

    def dead_queues_dropped() -> bool:
        queues = {q.name for q in Queue.all(connection=cluster.conn)}
        return sticky_a not in queues and sticky_b not in queues

    wait_for(dead_queues_dropped, 10, "the sticky queues of dead workers to be dropped")
    assert mask_of(cluster.click(first, 50.0, 50.0)).any()
    cluster.cached_on_wc = first


def test_redis_outage_gives_503_keeps_health_and_recovers_without_restart(cluster):
    url = getattr(cluster, "cached_on_wc", cluster.images[0])
    assert cluster.click(url, 50.0, 50.0).status_code == 200
    cluster.redis.stop()
    try:
        started = time.monotonic()
        resp = cluster.click(url, 50.0, 50.0)
        assert resp.status_code == 503, resp.text
        assert "Redis at redis://127.0.0.1" in resp.json()["detail"]
        assert time.monotonic() - started < 10
        health = requests.get(f"{cluster.base}/health", timeout=10)
        assert health.status_code == 200 and health.json()["redis"] == "down"
        assert "rpsam2_redis_up 0.0" in requests.get(f"{cluster.base}/metrics", timeout=10).text
        assert cluster.open_task(url).status_code == 200  # opening a task still answers (no pre-encode)
    finally:
        cluster.redis.start()  # same port, empty data: nothing survived
    wait_for(lambda: "wc" in cluster.live_names(), 30, "wc to publish its presence again")
    resp = cluster.click(url, 50.0, 50.0)
    assert mask_of(resp).any()
    assert requests.get(f"{cluster.base}/health", timeout=10).json()["redis"] == "up"


def test_sigterm_lets_the_running_click_finish_then_stops_the_worker(cluster):
    worker = cluster.workers["wc"]
    url = urls_for(cluster, "wc", 1, USED, ["wc"])[0]
    answer: list[requests.Response] = []
    clicking = threading.Thread(target=lambda: answer.append(cluster.click(url, 50.0, 50.0)))
    clicking.start()
    wait_for(lambda: started_job(cluster, sticky_queue(CLICK_QUEUE, "wc"), url), 30, "wc to start encoding")
    worker.kill(signal.SIGTERM)
    clicking.join(timeout=PREDICT_TIMEOUT + 30)
    assert mask_of(answer[0]).any()  # warm shutdown: the job in hand is finished, not dropped
    assert worker.proc.wait(timeout=60) == 0, worker.tail()
    assert not is_alive(cluster.conn, "wc")  # withdrawn at once, not after the presence TTL
    assert "worker wc stopped" in worker.tail()
