"""The last video propagation of each project, ``MODEL_DIR/propagation_status.json``: written by
the propagation job, shown by /health (``last_propagation``).  A file, like retrain_status, so
that inline mode and RQ workers report the same way; one entry per project, updated under an
flock because several workers may finish propagations of one project at once."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from rpsam2_backend.core.names import PROPAGATION_STATUS_FILE


def status_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / PROPAGATION_STATUS_FILE


def read_propagation_status(model_dir: str | Path) -> dict[str, dict[str, Any]]:
    """project id -> its last propagation's status ({} before the first one)."""
    try:
        data = json.loads(status_path(model_dir).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_propagation_status(model_dir: str | Path, project: str, status: dict[str, Any]) -> dict[str, Any]:
    """Replace ``project``'s entry (stamped with the time); returns the stored entry."""
    path = status_path(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "timestamp": time.time(),
             "project": str(project), **status}
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_propagation_status(model_dir)
        data[str(project)] = entry
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, path)
    return entry
