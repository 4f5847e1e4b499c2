"""Our own processes for end-to-end tests: redis-server, `rpsam2-worker`, `label-studio-ml start`, gunicorn.

Each runs as the user would run it (real console scripts, real ports on loopback), in its own
process group with a log file, and is stopped with its whole group so nothing outlives a test.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.paths import REPO_ROOT

VENV_BIN = Path(sys.executable).parent
TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # A test run killed from outside must not leave SAM2 workers eating the shared cores.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout_s)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout_s)
        return self.process.returncode


def spawn(name: str, command: list[str], log_dir: Path, env: Mapping[str, str]) -> Proc:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=dict(env), stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )
    return Proc(name, process, log_path)


def backend_env(base: Mapping[str, str] | None = None, **settings: str) -> dict[str, str]:
    """Environment for our console scripts: the test venv first on PATH, a tiny random SAM2 on CPU."""
    env = {
        k: v for k, v in (os.environ if base is None else base).items()
        if not k.startswith("RPSAM2_") and k not in ("REDIS_URL", "MODEL_DIR", "LABEL_STUDIO_URL")
    }
    # `label-studio-ml start` runs `python _wsgi.py` with the first python on PATH.
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env.update(
        RPSAM2_SAM2_CONFIG=TINY_CONFIG, RPSAM2_ALLOW_RANDOM_WEIGHTS="1", RPSAM2_DEVICE="cpu",
        RPSAM2_CACHE_MB="256", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
    )
    env.update(settings)
    return env


def start_redis(log_dir: Path) -> tuple[Proc, str]:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise RuntimeError("redis-server not found: run `make redis` (apt-get install redis-server)")
    port = free_port()
    command = [
        redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(log_dir),
    ]
    proc = spawn("redis", command, log_dir, os.environ)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: _redis_ping(port), 30, proc, "redis-server did not answer PING")
    return proc, url


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_worker(log_dir: Path, env: Mapping[str, str], queues: str = "click", name: str = "e2e-click") -> Proc:
    return spawn(
        f"worker-{name}", [str(VENV_BIN / "rpsam2-worker"), "--queues", queues, "--name", name], log_dir, env
    )


def start_backend(log_dir: Path, env: Mapping[str, str], port: int) -> tuple[Proc, str]:
    command = [str(VENV_BIN / "label-studio-ml"), "start", "rpsam2_backend", "-p", str(port), "--host", "127.0.0.1"]
    return spawn("backend", command, log_dir, env), f"http://127.0.0.1:{port}"


def start_gunicorn(log_dir: Path, env: Mapping[str, str], port: int) -> tuple[Proc, str]:
    """The production web tier: gunicorn with deploy/gunicorn.conf.py, as make run-prod starts it."""
    command = [str(VENV_BIN / "gunicorn"), "-c", str(REPO_ROOT / "deploy" / "gunicorn.conf.py")]
    env = {**env, "PORT": str(port), "HOST": "127.0.0.1"}
    return spawn("gunicorn", command, log_dir, env), f"http://127.0.0.1:{port}"


def backend_health(url: str) -> dict | None:
    try:
        resp = requests.get(f"{url}/health", timeout=3)
    except requests.RequestException:
        return None
    return resp.json() if resp.ok else None


def wait_for(check: Callable[[], object], timeout_s: float, proc: Proc, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if not proc.alive():
            raise AssertionError(f"{what}: {proc.name} exited ({proc.process.returncode}):\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s:.0f} s:\n{proc.log_tail()}")
        time.sleep(0.5)


@dataclass
class Stack:
    """redis + one click worker + the backend in RQ mode."""

    redis: Proc
    redis_url: str
    worker: Proc
    backend: Proc
    backend_url: str
    procs: list[Proc] = field(default_factory=list)

    def wait_ready(self, timeout_s: float = 240.0) -> dict:
        """Until the backend answers /health and sees a live click worker (SAM2 loaded)."""
        def ready() -> dict | None:
            if not self.worker.alive():
                raise AssertionError(f"worker exited:\n{self.worker.log_tail()}")
            health = backend_health(self.backend_url)
            if health and health.get("redis") == "up" and health.get("dispatch", {}).get("workers"):
                return health
            return None

        return wait_for(ready, timeout_s, self.backend, "backend + worker not ready")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def start_stack(log_dir: Path, worker_queues: str = "click", **settings: str) -> Stack:
    log_dir.mkdir(parents=True, exist_ok=True)
    redis_proc, redis_url = start_redis(log_dir)
    procs = [redis_proc]
    try:
        env = backend_env(REDIS_URL=redis_url, MODEL_DIR=str(log_dir / "models"), **settings)
        worker = start_worker(log_dir, env, queues=worker_queues)
        procs.append(worker)
        backend, url = start_backend(log_dir, env, free_port())
        procs.append(backend)
    except BaseException:
        for proc in reversed(procs):
            proc.stop()
        raise
    return Stack(redis_proc, redis_url, worker, backend, url, procs)
