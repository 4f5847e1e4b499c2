"""The last retrain's status, ``MODEL_DIR/retrain_status.json``: written by the retrain job, shown
by /health.  A file rather than Redis so that inline mode and ``rpsam2-retrain`` report the same way."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from rpsam2_backend.core.names import RETRAIN_STATUS_FILE


def status_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / RETRAIN_STATUS_FILE


def read_status(model_dir: str | Path) -> dict[str, Any] | None:
    """The last retrain's status, or None before the first one."""
    try:
        return json.loads(status_path(model_dir).read_text())
    except (OSError, ValueError):
        return None


def write_status(model_dir: str | Path, status: dict[str, Any]) -> dict[str, Any]:
    path = status_path(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    status = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "timestamp": time.time(), **status}
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(status, indent=2, default=str))
    os.replace(tmp, path)
    return status
