"""The real start command, `label-studio-ml start rpsam2_backend`, as a user runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from rpsam2_backend.labelstudio.brush import rle_to_mask
from tests.conftest import TINY_CONFIG, save_png
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPSAM2_") and k not in ("REDIS_URL", "MODEL_DIR")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"  # label-studio-ml runs the first `python` on PATH
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_without_checkpoint_fails_fast_with_the_fix(tmp_path):
    proc = subprocess.run(
        [str(BIN / "label-studio-ml"), "start", "rpsam2_backend", "-p", str(_free_port())],
        cwd=REPO, env=_env(RPSAM2_CHECKPOINT_DIR=str(tmp_path), MODEL_DIR=str(tmp_path / "m")),
        capture_output=True, text=True, timeout=180,
    )
    # label-studio-ml runs _wsgi.py through os.system, so its exit status is not passed on;
    # the message is what the user sees.
    assert "cannot start" in proc.stderr, proc.stderr[-2000:]
    assert "sam2.1_hiera_large.pt" in proc.stderr
    assert "make checkpoints" in proc.stderr and "RPSAM2_SAM2_CHECKPOINT" in proc.stderr


@pytest.mark.slow
def test_started_backend_answers_a_click_over_http(tmp_path, voc):
    files = tmp_path / "files"
    save_png(files / "img.png", voc["rgb"])
    port = _free_port()
    log = open(tmp_path / "backend.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "label-studio-ml"), "start", "rpsam2_backend", "-p", str(port), "--host", "127.0.0.1"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=_env(RPSAM2_SAM2_CONFIG=TINY_CONFIG, RPSAM2_ALLOW_RANDOM_WEIGHTS="1", RPSAM2_DEVICE="cpu",
                 MODEL_DIR=str(tmp_path / "models"), LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(files)),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (tmp_path / "backend.log").read_text()[-3000:]
            assert time.time() < deadline, "backend did not come up"
            time.sleep(1)
        config = (REPO / "deploy" / "label_config.xml").read_text()
        assert requests.post(f"{url}/setup", json={"project": "1.1", "schema": config}, timeout=30).ok
        body = {
            "tasks": [{"id": 1, "data": {"image": "/data/local-files/?d=img.png"}}],
            "label_config": config,
            "params": {"context": {"result": [{
                "type": "keypointlabels", "from_name": "click", "to_name": "image",
                "original_width": 500, "original_height": 375,
                "value": {"x": 50.0, "y": 50.0, "width": 1, "keypointlabels": ["Spatula"]},
            }]}},
        }
        resp = requests.post(f"{url}/predict", json=body, timeout=120)
        assert resp.status_code == 200, resp.text
        result = resp.json()["results"][0]["result"][0]
        mask = rle_to_mask(result["value"]["rle"], 375, 500)
        assert mask.shape == (375, 500) and 0 < mask.sum() < mask.size
        assert np.array_equal(mask.shape, (result["original_height"], result["original_width"]))
        bad = requests.post(f"{url}/predict", data="{oops", headers={"Content-Type": "application/json"}, timeout=30)
        assert bad.status_code == 400 and "JSON" in bad.json()["detail"]
        assert requests.get(f"{url}/health", timeout=5).json()["status"] == "UP"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()
