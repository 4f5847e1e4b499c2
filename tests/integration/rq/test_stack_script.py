"""deploy/stack.sh, the Docker-free twin of the compose stack, starts, serves a click and stops."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.paths import REPO_ROOT
from tests.support.rpsam2_stack import backend_env, free_port

DEPLOY = REPO_ROOT / "deploy"


@pytest.mark.slow
def test_stack_script_starts_serves_and_stops(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    env = backend_env(
        RUN_DIR=str(tmp_path / "run"), PORT=str(port), REDIS_PORT=str(redis_port), HOST="127.0.0.1",
        ENV_FILE=str(tmp_path / "none.env"), VENV=str(Path(sys.executable).parent.parent),
    )
    stack = [str(DEPLOY / "stack.sh")]

    def run(action: str, timeout: float = 400) -> subprocess.CompletedProcess:
        return subprocess.run(stack + [action], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((tmp_path / "run").glob("*.log")))

    pids: list[int] = []
    try:
        started = run("start")
        assert started.returncode == 0, started.stdout + started.stderr + logs()
        pids = [int(p.read_text()) for p in sorted((tmp_path / "run").glob("*.pid"))]
        assert len(pids) == 4, sorted(p.name for p in (tmp_path / "run").iterdir())
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
        assert health["redis"] == "up"
        queues = sorted(q for w in health["dispatch"]["workers"] for q in w["queues"])
        assert "rpsam2-click" in queues and "rpsam2-train" in queues, health
        status = run("status", timeout=60)
        assert status.returncode == 0 and "health: ready" in status.stdout, status.stdout
    finally:
        stopped = run("stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert not list((tmp_path / "run").glob("*.pid"))
    for pid in pids:  # every process group is gone, children of label-studio-ml included
        assert subprocess.run(["pgrep", "-g", str(pid)], capture_output=True).returncode == 1, shlex.join(
            ["pgrep", "-g", str(pid)]
        )
    assert run("status", timeout=60).returncode == 3
