"""Queue overhead: a click through HTTP + Redis + ``rpsam2-worker`` vs the bare decoder call.

A: the Label Studio ``/predict`` request of one click, over a kept-alive HTTP connection to the
production web tier (gunicorn, deploy/gunicorn.conf.py, RQ mode), which enqueues the segment job
on Redis and waits for the worker's result, timed from sending the request to reading the last
byte of the answer.  The image is cached on the worker (warm-up clicks), so A is decode +
everything around it.  The client's JSON parse of the answer (Label Studio's work, not the
backend's) is outside A and reported apart; runs before 2026-12-05 had it inside A.
B: the decoder call itself (``RPSAM2Predictor.segment`` on the cached features), timed inside the
worker for that same click; the response carries it in its ``Server-Timing`` header.
Overhead = p50 over clicks of (A - B) for the same click: pairing cancels the decode's own
run-to-run noise (+-5 ms on 2 shared cores), which an unpaired p50(A) - p50(B) carries in full.
Floor: what any such round trip costs on this machine, measured in the same run: one Redis PING
plus one minimal HTTP request through the same gunicorn (a 404 answered by the app).  The ratio
overhead / floor compares machines.  Split row: the same click through RQ alone (no HTTP) and
through the development server (``label-studio-ml start``, werkzeug, no keep-alive).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.common import (
    TINY_CONFIG,
    Row,
    engine,
    measure,
    median,
    percentile,
    test_features,
    test_image,
    test_object,
)

TARGET_MS = 10.0
# Pause before each measured call.  Both processes run torch on the same 2 cores, and a thread
# pool keeps spinning for a while after its last operation: without a pause the bare decode in
# this process slows the worker's decode of the next click (and the other way round), which a
# deployment, where the web process runs no torch, never sees.
IDLE_GAP_S = float(os.environ.get("RPSAM2_BENCH_IDLE_GAP_S", "0.05"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
WORKER_BIN = str(Path(sys.executable).with_name("rpsam2-worker"))
GUNICORN_BIN = str(Path(sys.executable).with_name("gunicorn"))
WORKER_NAME = "bench"
START_TIMEOUT_S = 300.0
LABEL_CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="Object"/></KeyPointLabels>
  <BrushLabels name="brush" toName="image"><Label value="Object"/></BrushLabels>
</View>
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def server_timing(header: str) -> dict[str, float]:
    """``decode;dur=5.1, job;dur=6.0`` -> {"decode": 0.0051, "job": 0.006} (seconds)."""
    out = {}
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                out[name] = float(value) / 1e3
    return out


class Stack:
    """redis-server + one rpsam2-worker + the web app on loopback; ``close`` stops what it started."""

    def __init__(self, image: np.ndarray, threads: int) -> None:
        import cv2
        import redis

        from rpsam2_backend.core.settings import Settings

        self.tmp = Path(tempfile.mkdtemp(prefix="rpsam2-bench-"))
        files = self.tmp / "files"
        files.mkdir()
        cv2.imwrite(str(files / "image.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.url = "/data/local-files/?d=image.png"
        self.height, self.width = image.shape[:2]
        self.procs: list[subprocess.Popen] = []
        self.http = None
        port = _free_port()
        redis_url = f"redis://127.0.0.1:{port}/0"
        self.procs.append(subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        ))
        conn = redis.Redis.from_url(redis_url, socket_connect_timeout=0.5)

        def redis_up() -> bool:
            try:
                return bool(conn.ping())
            except redis.exceptions.ConnectionError:
                return False

        _wait(redis_up, 15, "redis-server")
        overrides = {
            "REDIS_URL": redis_url, "RPSAM2_SAM2_CONFIG": TINY_CONFIG, "RPSAM2_ALLOW_RANDOM_WEIGHTS": "1",
            "RPSAM2_DEVICE": "cpu", "MODEL_DIR": str(self.tmp / "models"), "RPSAM2_CACHE_MB": "512",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files), "RPSAM2_PREDICT_TIMEOUT": "300",
        }
        self.settings = Settings.from_env(overrides)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RPSAM2_") and k != "REDIS_URL"}
        # the same thread count as the bare side in this process
        env.update(overrides, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
        self.env = env
        self.redis_url = redis_url
        self.log = self.tmp / "worker.log"
        with open(self.log, "wb") as out:
            self.worker = subprocess.Popen([WORKER_BIN, "--name", WORKER_NAME], env=env, stdout=out,
                                           stderr=subprocess.STDOUT)
        self.procs.insert(0, self.worker)
        from rpsam2_backend.queue.presence import is_alive

        def worker_up() -> bool:
            if self.worker.poll() is not None:
                raise RuntimeError(f"rpsam2-worker exited with {self.worker.returncode}:\n{self.tail()}")
            return is_alive(conn, WORKER_NAME)

        _wait(worker_up, START_TIMEOUT_S, "rpsam2-worker to start")
        self._start_web()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def _start_web(self) -> None:
        import requests
        from werkzeug.serving import make_server

        from rpsam2_backend.web.app import create_app

        port = _free_port()
        env = {**self.env, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "1", "RPSAM2_WEB_THREADS": "4",
               "LOG_LEVEL": "warning"}
        conf = Path(__file__).resolve().parents[1] / "deploy" / "gunicorn.conf.py"
        with open(self.tmp / "gunicorn.log", "wb") as out:
            self.procs.insert(0, subprocess.Popen([GUNICORN_BIN, "-c", str(conf)], env=env, stdout=out,
                                                  stderr=subprocess.STDOUT))
        self.base = f"http://127.0.0.1:{port}"
        self.session = requests.Session()

        def web_up() -> bool:
            try:
                return self.session.get(f"{self.base}/health", timeout=2).ok
            except requests.ConnectionError:
                return False

        _wait(web_up, START_TIMEOUT_S, "gunicorn")
        # The development server `label-studio-ml start rpsam2_backend` runs, in this process.
        self.http = make_server("127.0.0.1", 0, create_app(self.settings, warm=False), threaded=True)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.dev_base = f"http://127.0.0.1:{self.http.server_port}"
        for base in (self.base, self.dev_base):
            resp = self.session.post(f"{base}/setup", json={"project": "1.1", "schema": LABEL_CONFIG}, timeout=30)
            resp.raise_for_status()

    def click(self, x_pct: float, y_pct: float, base: str | None = None) -> tuple[dict, dict[str, float]]:
        """(the brush result, the response's Server-Timing in seconds) of one click; the timing also
        holds ``round_trip`` (request sent to last response byte read) and ``client_parse`` (the
        client's JSON parse of the body, the caller's work and not part of the round trip)."""
        item = {
            "type": "keypointlabels", "from_name": "kp", "to_name": "image",
            "original_width": self.width, "original_height": self.height, "is_positive": True,
            "value": {"x": x_pct, "y": y_pct, "width": 1, "keypointlabels": ["Object"]},
        }
        body = {"tasks": [{"id": 1, "data": {"image": self.url}}], "label_config": LABEL_CONFIG,
                "params": {"context": {"result": [item]}}}
        start = time.perf_counter()
        resp = self.session.post(f"{base or self.base}/predict", json=body, timeout=330)  # reads the whole body
        round_trip = time.perf_counter() - start
        if resp.status_code != 200:
            raise RuntimeError(f"/predict answered {resp.status_code}: {resp.text[:500]}\n{self.tail()}")
        start = time.perf_counter()
        result = resp.json()["results"][0]["result"]
        client_parse = time.perf_counter() - start
        if not result:
            raise RuntimeError(f"/predict returned no mask: {resp.text[:500]}")
        timing = server_timing(resp.headers.get("Server-Timing", ""))
        return result[0], {**timing, "round_trip": round_trip, "client_parse": client_parse}

    def close(self) -> None:
        if self.http is not None:
            self.http.shutdown()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


def unique_x(x_pct: float, n: int) -> float:
    """The n-th distinct click near ``x_pct``: 1e-5 percent apart, far below a pixel."""
    return x_pct + n * 1e-5


def click_positions(gt: np.ndarray, k: int = 5) -> list[tuple[float, float]]:
    """k clicks (percent of width/height) on pixel centres spread over the object."""
    rows, cols = np.nonzero(gt)
    idx = np.linspace(0, rows.size - 1, k + 2).astype(int)[1:-1]
    h, w = gt.shape
    return [((cols[i] + 0.5) / w * 100.0, (rows[i] + 0.5) / h * 100.0) for i in idx]


def serialization_ms(mask: np.ndarray, reps: int = 20) -> tuple[float, int]:
    """(ms, RLE bytes) of the click path's steps whose cost grows with the mask's RLE: encode in
    the worker, through RQ's result record (pickle + base64, written twice: early for the click
    and again by rq's bookkeeping) and back, JSON out of the web app (its orjson provider).  The
    client's parse of that JSON is the client's work, outside the round trip (reported apart)."""
    import base64
    import pickle

    import orjson

    from rpsam2_backend.labelstudio.brush import mask_to_rle_bytes

    def once() -> int:
        rle = mask_to_rle_bytes(mask)
        for _ in range(2):
            record = base64.b64encode(pickle.dumps({"rle": rle}))
        back = pickle.loads(base64.b64decode(record))["rle"]
        orjson.dumps({"rle": np.frombuffer(back, np.uint8)}, option=orjson.OPT_SERIALIZE_NUMPY)
        return len(rle)

    return median(measure(once, reps)) * 1e3, once()


def _epoch(moment: datetime) -> float:
    """rq stores UTC; a naive datetime it reads back is UTC too."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def rq_steps_ms(stack: Stack, payload: dict, reps: int) -> dict[str, float]:
    """p50 ms of each step of RQ's part of a click, from the web side's clock and rq's own job
    and result timestamps (one host, one clock): the enqueue transaction, queue to job start
    (the worker's wake-up, job load and rq's started-job bookkeeping), the job's own work outside
    the decode (image lookup, RLE), job end to the result's record, and that record to the
    waiting side (result serialization, XADD, XREAD, restore)."""
    import redis
    from rq import Queue
    from rq.job import Job
    from rq.results import Result

    from rpsam2_backend.core.names import SEGMENT_JOB
    from rpsam2_backend.queue.presence import sticky_queue

    conn = redis.Redis.from_url(stack.redis_url)
    queue = Queue(sticky_queue(stack.settings.queue.click_queue, WORKER_NAME), connection=conn)
    steps: dict[str, list[float]] = {k: [] for k in ("enqueue", "to_start", "job_outside_decode", "to_result",
                                                     "result_to_caller")}
    base_x = payload["clicks"][0]["x"]
    for i in range(reps + 2):  # 2 warm-up rounds
        payload = {**payload, "clicks": [{**payload["clicks"][0], "x": unique_x(base_x, 10_000 + i)}]}
        time.sleep(IDLE_GAP_S)
        t0 = time.time()
        with conn.pipeline() as pipe:  # one transaction, as RQDispatcher enqueues
            job = queue.enqueue(SEGMENT_JOB, payload, result_ttl=60, pipeline=pipe)
            pipe.execute()
        t1 = time.time()
        streams = conn.xread({Result.get_key(job.id): "0-0"}, block=int(START_TIMEOUT_S * 1000))
        entry_id, fields = streams[0][1][-1]
        value = Result.restore(job.id, entry_id.decode(), fields, connection=conn).return_value
        t2 = time.time()
        if i < 2:
            continue
        time.sleep(0.02)  # rq's bookkeeping after the early result
        started = _epoch(Job.fetch(job.id, connection=conn).started_at)
        recorded = _epoch(min(r.created_at for r in Result.all(job)))
        steps["enqueue"].append(t1 - t0)
        steps["to_start"].append(started - t1)
        steps["job_outside_decode"].append(value["seconds"] - value["decode_seconds"])
        steps["to_result"].append(recorded - started - value["seconds"])
        steps["result_to_caller"].append(t2 - recorded)
    return {k: percentile(v, 50) * 1e3 for k, v in steps.items()}


def floor_ms(stack: Stack, reps: int) -> tuple[float, float]:
    """(p50 ms of one Redis PING, p50 ms of one minimal HTTP request through the same gunicorn)."""
    import redis

    conn = redis.Redis.from_url(stack.redis_url)
    conn.ping()
    pings = measure(conn.ping, reps)
    stack.session.get(f"{stack.base}/floor", timeout=10)

    def minimal() -> None:
        if stack.session.get(f"{stack.base}/floor", timeout=10).status_code != 404:
            raise RuntimeError("the floor request must be the app's cheapest answer (a 404)")

    return percentile(pings, 50) * 1e3, percentile(measure(minimal, reps), 50) * 1e3


def run(quick: bool = False, clicks: int | None = None) -> list[Row]:
    import torch

    from rpsam2_backend.engine.predictor import PixelClick, RPSAM2Predictor

    if not Path(REDIS_SERVER).exists():
        raise RuntimeError("redis-server is not installed (`make redis`)")
    clicks = clicks or (10 if quick else 50)
    image, gt = test_image(), test_object()
    h, w = gt.shape
    positions = click_positions(gt)
    bare = RPSAM2Predictor(engine())
    features = test_features()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per click
    stack = Stack(image, torch.get_num_threads())
    try:
        from rpsam2_backend.core.names import SEGMENT_JOB
        from rpsam2_backend.queue.rq_dispatch import RQDispatcher

        dispatcher = RQDispatcher(stack.settings)
        stack.click(*positions[0])  # the worker encodes the image
        web, in_worker, dev, dev_decode, queued, queued_decode, direct, parse = [], [], [], [], [], [], [], []
        for i in range(clicks + 3):  # 3 warm-up rounds
            x, y = positions[i % len(positions)]
            # Each call its own click (a hair apart): the worker remembers the masks of prompts
            # it decoded (jobs.decoded_masks), and a repeated prompt would skip the decode.
            x_web, x_dev, x_rq = (unique_x(x, 3 * i + k) for k in range(3))
            time.sleep(IDLE_GAP_S)
            _, timing = stack.click(x_web, y)
            t_web = timing["round_trip"]
            time.sleep(IDLE_GAP_S)
            _, dev_timing = stack.click(x_dev, y, stack.dev_base)
            t_dev = dev_timing["round_trip"]
            payload = {"image_url": stack.url, "clicks": [{"x": x_rq, "y": y, "positive": True}]}
            time.sleep(IDLE_GAP_S)
            start = time.perf_counter()
            result = dispatcher.call(SEGMENT_JOB, payload, routing_key=stack.url)
            t_queue = time.perf_counter() - start
            time.sleep(IDLE_GAP_S)
            start = time.perf_counter()
            seg = bare.segment(None, [PixelClick(x / 100.0 * w, y / 100.0 * h)], features=features)
            t_bare = time.perf_counter() - start
            if "decode" not in timing or result.get("decodes") != 1:
                raise RuntimeError(f"click {i} was not decoded exactly once: {timing}, {result.get('decodes')}")
            if i >= 3:
                web.append(t_web)
                parse.append(timing["client_parse"])
                in_worker.append(timing["decode"])
                dev.append(t_dev)
                dev_decode.append(dev_timing["decode"])
                queued.append(t_queue)
                queued_decode.append(result["decode_seconds"])
                direct.append(t_bare)
        steps = rq_steps_ms(stack, payload, clicks)
        redis_floor, http_floor = floor_ms(stack, 20 if quick else 100)
    finally:
        stack.close()
    noisy_ms, noisy_bytes = serialization_ms(seg.mask)
    true_ms, true_bytes = serialization_ms(gt)
    ms = 1e3
    web_a, decode_b = np.asarray(web) * ms, np.asarray(in_worker) * ms
    web_p50, web_p95 = percentile(web_a, 50), percentile(web_a, 95)
    decode_p50, decode_p95 = percentile(decode_b, 50), percentile(decode_b, 95)
    paired = web_a - decode_b
    overhead, overhead_p95 = percentile(paired, 50), percentile(paired, 95)
    rq_over = percentile((np.asarray(queued) - np.asarray(queued_decode)) * ms, 50)
    dev_over = percentile((np.asarray(dev) - np.asarray(dev_decode)) * ms, 50)
    bare_p50 = percentile(direct, 50) * ms
    parse_p50 = percentile(parse, 50) * ms
    floor = redis_floor + http_floor
    split = Row(
        "  split of that overhead (p50)",
        f"RQ alone (no HTTP) +{rq_over:.1f} ms",
        f"web layer (HTTP+Flask) +{overhead - rq_over:.1f} ms; dev server +{dev_over:.1f} ms in all",
        f"decode here {bare_p50:.1f} ms",
        "(report)",
        None,
        {"rq_overhead_p50_ms": rq_over, "web_layer_ms": overhead - rq_over, "dev_server_overhead_p50_ms": dev_over,
         "bare_here_p50_ms": bare_p50, "unpaired_overhead_p50_ms": web_p50 - bare_p50},
    )
    steps_row = Row(
        "  RQ's part by step (p50, rq's timestamps)",
        f"enqueue {steps['enqueue']:.1f} ms + queue to job start {steps['to_start']:.1f} ms",
        f"job outside decode {steps['job_outside_decode']:.1f} ms + to result {steps['to_result']:.1f} ms",
        f"result to caller {steps['result_to_caller']:.1f} ms",
        "(report)",
        None,
        {f"{k}_ms": v for k, v in steps.items()},
    )
    floor_row = Row(
        "  against this machine's floor",
        f"Redis PING {redis_floor:.2f} ms + minimal HTTP {http_floor:.2f} ms",
        f"= {floor:.2f} ms",
        f"overhead = {overhead / floor:.1f}x the floor",
        "(report)",
        None,
        {"redis_ping_p50_ms": redis_floor, "minimal_http_p50_ms": http_floor, "floor_ms": floor,
         "overhead_over_floor": overhead / floor},
    )
    return [
        Row(
            f"queue overhead, {clicks} clicks (gunicorn)",
            f"HTTP+Redis+worker p50 {web_p50:.1f} / p95 {web_p95:.1f} ms",
            f"decoder alone p50 {decode_p50:.1f} / p95 {decode_p95:.1f} ms",
            f"+{overhead:.1f} ms p50 (+{overhead_p95:.1f} ms p95); client JSON parse {parse_p50:.1f} ms apart",
            f"<= {TARGET_MS:g} ms p50",
            overhead <= TARGET_MS,
            {"web_p50_ms": web_p50, "web_p95_ms": web_p95, "decode_p50_ms": decode_p50, "overhead_p50_ms": overhead,
             "overhead_p95_ms": overhead_p95, "client_json_parse_p50_ms": parse_p50, "clicks": float(clicks)},
        ),
        split,
        steps_row,
        floor_row,
        Row(
            "  of which grows with the RLE",
            f"this mask ({noisy_bytes // 1024} KB RLE) {noisy_ms:.1f} ms",
            f"object's true shape ({max(1, true_bytes // 1024)} KB) {true_ms:.1f} ms",
            f"~+{overhead - noisy_ms + true_ms:.1f} ms p50 with true-shape masks (estimate)",
            f"<= {TARGET_MS:g} ms p50 (estimate)",
            overhead - noisy_ms + true_ms <= TARGET_MS,
            {"rle_bytes": float(noisy_bytes), "rle_ms": noisy_ms, "true_shape_rle_bytes": float(true_bytes),
             "true_shape_rle_ms": true_ms, "estimated_true_shape_overhead_ms": overhead - noisy_ms + true_ms},
        ),
    ]
