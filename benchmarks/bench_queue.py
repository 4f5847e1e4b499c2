"""Queue overhead: a click through Flask + Redis + ``rpsam2-worker`` vs the bare decoder call.

A: the Label Studio ``/predict`` request of one click, over HTTP to the web app (RQ mode), which
enqueues the segment job on Redis and waits for the worker's result.  The image is cached on the
worker (warm-up clicks), so A is decode + everything around it.
B: ``RPSAM2Predictor.segment`` in this process on the same features (same seeded random weights,
same pixels, same click), i.e. the decoder call alone.
The two sides alternate click by click so load from neighbours hits both; overhead = p50(A) - p50(B).
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
from pathlib import Path

import numpy as np

from benchmarks.common import TINY_CONFIG, Row, engine, percentile, test_features, test_image, test_object

TARGET_MS = 15.0
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
WORKER_BIN = str(Path(sys.executable).with_name("rpsam2-worker"))
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


class Stack:
    """redis-server + one rpsam2-worker + the web app on loopback; ``close`` stops what it started."""

    def __init__(self, image: np.ndarray, threads: int) -> None:
        import cv2
        import redis

        from rpsam2_backend.settings import Settings

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
        self.settings = Settings(
            sam2_config=TINY_CONFIG, allow_random_weights=True, device="cpu", model_dir=str(self.tmp / "models"),
            local_files_root=str(files), redis_url=redis_url, predict_timeout=300.0, cache_mb=512,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("RPSAM2_") and k != "REDIS_URL"}
        env.update(
            REDIS_URL=redis_url, RPSAM2_SAM2_CONFIG=TINY_CONFIG, RPSAM2_ALLOW_RANDOM_WEIGHTS="1",
            RPSAM2_DEVICE="cpu", MODEL_DIR=self.settings.model_dir, RPSAM2_CACHE_MB="512",
            LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(files), PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS=str(threads),  # the same thread count as the bare side in this process
        )
        self.log = self.tmp / "worker.log"
        with open(self.log, "wb") as out:
            self.worker = subprocess.Popen([WORKER_BIN, "--name", WORKER_NAME], env=env, stdout=out,
                                           stderr=subprocess.STDOUT)
        self.procs.insert(0, self.worker)
        from rpsam2_backend.worker_presence import is_alive

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

        from rpsam2_backend.server import create_app

        app = create_app(self.settings, warm=False)
        self.http = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.http.server_port}"
        self.session = requests.Session()
        resp = self.session.post(f"{self.base}/setup", json={"project": "1.1", "schema": LABEL_CONFIG}, timeout=30)
        resp.raise_for_status()

    def click(self, x_pct: float, y_pct: float) -> dict:
        item = {
            "type": "keypointlabels", "from_name": "kp", "to_name": "image",
            "original_width": self.width, "original_height": self.height, "is_positive": True,
            "value": {"x": x_pct, "y": y_pct, "width": 1, "keypointlabels": ["Object"]},
        }
        body = {"tasks": [{"id": 1, "data": {"image": self.url}}], "label_config": LABEL_CONFIG,
                "params": {"context": {"result": [item]}}}
        resp = self.session.post(f"{self.base}/predict", json=body, timeout=330)
        if resp.status_code != 200:
            raise RuntimeError(f"/predict answered {resp.status_code}: {resp.text[:500]}\n{self.tail()}")
        result = resp.json()["results"][0]["result"]
        if not result:
            raise RuntimeError(f"/predict returned no mask: {resp.text[:500]}")
        return result[0]

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


def click_positions(gt: np.ndarray, k: int = 5) -> list[tuple[float, float]]:
    """k clicks (percent of width/height) on pixel centres spread over the object."""
    rows, cols = np.nonzero(gt)
    idx = np.linspace(0, rows.size - 1, k + 2).astype(int)[1:-1]
    h, w = gt.shape
    return [((cols[i] + 0.5) / w * 100.0, (rows[i] + 0.5) / h * 100.0) for i in idx]


def run(quick: bool = False, clicks: int | None = None) -> list[Row]:
    import torch

    from rpsam2_backend.engine.predictor import Click, RPSAM2Predictor

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
        from rpsam2_backend.dispatch import SEGMENT_JOB
        from rpsam2_backend.rq_dispatch import RQDispatcher

        dispatcher = RQDispatcher(stack.settings)
        stack.click(*positions[0])  # the worker encodes the image
        web, direct, queued, job = [], [], [], []
        for i in range(clicks + 3):  # 3 warm-up rounds
            x, y = positions[i % len(positions)]
            start = time.perf_counter()
            stack.click(x, y)
            t_web = time.perf_counter() - start
            # The same click through RQ alone (no HTTP): splits the overhead into queue and web.
            payload = {"image_url": stack.url, "clicks": [{"x": x, "y": y, "positive": True}]}
            start = time.perf_counter()
            result = dispatcher.call(SEGMENT_JOB, payload, routing_key=stack.url)
            t_queue = time.perf_counter() - start
            start = time.perf_counter()
            bare.segment(None, [Click(x / 100.0 * w, y / 100.0 * h)], features=features)
            t_bare = time.perf_counter() - start
            if i >= 3:
                web.append(t_web)
                queued.append(t_queue)
                job.append(result["seconds"])
                direct.append(t_bare)
    finally:
        stack.close()
    web_p50, web_p95 = percentile(web, 50) * 1e3, percentile(web, 95) * 1e3
    bare_p50, bare_p95 = percentile(direct, 50) * 1e3, percentile(direct, 95) * 1e3
    overhead = web_p50 - bare_p50
    queue_p50, job_p50 = percentile(queued, 50) * 1e3, percentile(job, 50) * 1e3
    split = Row(
        "  split of that overhead (p50)",
        f"RQ round trip {queue_p50:.1f} ms (job inside worker {job_p50:.1f} ms)",
        f"web layer (HTTP+Flask) +{web_p50 - queue_p50:.1f} ms",
        f"RQ +{queue_p50 - job_p50:.1f} ms",
        "(report)",
        None,
        {"rq_p50_ms": queue_p50, "job_p50_ms": job_p50, "web_layer_ms": web_p50 - queue_p50},
    )
    return [
        Row(
            f"queue overhead, {clicks} clicks",
            f"HTTP+Redis+worker p50 {web_p50:.1f} / p95 {web_p95:.1f} ms",
            f"bare decode p50 {bare_p50:.1f} / p95 {bare_p95:.1f} ms",
            f"+{overhead:.1f} ms p50 (+{web_p95 - bare_p95:.1f} ms p95)",
            f"<= {TARGET_MS:g} ms p50",
            overhead <= TARGET_MS,
            {"web_p50_ms": web_p50, "web_p95_ms": web_p95, "bare_p50_ms": bare_p50, "bare_p95_ms": bare_p95,
             "overhead_p50_ms": overhead, "clicks": float(clicks)},
        ),
        split,
    ]
