"""`make run`'s checkpoint step: fetch the one file the settings need, verify it, refuse damage,
and say what to do when there is no internet (deploy/fetch_checkpoint.sh, download_checkpoints.sh).
A local HTTP server plays Meta's download site (CHECKPOINT_BASE_URL)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.image_server import Route, Server, serve
from tests.support.paths import REPO_ROOT


def _checkpoint() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:  # a .pt file is a zip archive
        archive.writestr("archive/data.pkl", b"weights" * 1000)
    return buf.getvalue()


@pytest.fixture(scope="module")
def site():
    good = _checkpoint()
    damaged = bytearray(good)
    damaged[60] ^= 0xFF  # inside the member's data: its CRC-32 no longer matches
    httpd, state = serve(Server(""))
    state.routes["/sam2.1_hiera_tiny.pt"] = Route(body=good)
    state.routes["/sam2.1_hiera_small.pt"] = Route(body=bytes(damaged))
    yield state, good
    httpd.shutdown()
    httpd.server_close()


def _fetch(tmp_path: Path, base: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RPSAM2_")}
    clean.update(PYTHON=sys.executable, CHECKPOINT_BASE_URL=base, RPSAM2_CHECKPOINT_DIR=str(tmp_path / "ckpt"), **env)
    return subprocess.run(["deploy/fetch_checkpoint.sh"], cwd=REPO_ROOT, env=clean, capture_output=True,
                          text=True, timeout=120)


def test_the_configured_checkpoint_is_fetched_verified_and_recorded(tmp_path, site) -> None:
    server, good = site
    out = _fetch(tmp_path, server.url, RPSAM2_SAM2_CONFIG="configs/sam2.1/sam2.1_hiera_t.yaml")
    assert out.returncode == 0, out.stderr
    target = tmp_path / "ckpt" / "sam2.1_hiera_tiny.pt"
    assert target.read_bytes() == good and not (tmp_path / "ckpt" / "sam2.1_hiera_tiny.pt.part").exists()
    sums = (tmp_path / "ckpt" / "SHA256SUMS").read_text()
    assert sums == f"{hashlib.sha256(good).hexdigest()}  sam2.1_hiera_tiny.pt\n"
    server.seen.clear()
    again = _fetch(tmp_path, server.url, RPSAM2_SAM2_CONFIG="configs/sam2.1/sam2.1_hiera_t.yaml")
    assert again.returncode == 0 and server.seen == []  # present and unchanged: not fetched again
    target.write_bytes(good[:-1] + b"!")  # changed after its download
    changed = _fetch(tmp_path, server.url, RPSAM2_SAM2_CONFIG="configs/sam2.1/sam2.1_hiera_t.yaml")
    assert changed.returncode != 0 and "does not match its SHA-256" in changed.stderr


def test_a_damaged_download_is_refused_and_nothing_is_kept(tmp_path, site) -> None:
    server, _ = site
    out = _fetch(tmp_path, server.url, RPSAM2_SAM2_CONFIG="configs/sam2.1/sam2.1_hiera_s.yaml")
    assert out.returncode != 0 and "zip CRC check failed" in out.stderr
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_offline_it_stops_with_the_ways_forward(tmp_path) -> None:
    out = _fetch(tmp_path, "http://127.0.0.1:9", RPSAM2_SAM2_CONFIG="configs/sam2.1/sam2.1_hiera_l.yaml")
    assert out.returncode == 2
    assert "sam2.1_hiera_large.pt" in out.stderr and "make run-demo" in out.stderr
    assert "RPSAM2_SAM2_CHECKPOINT" in out.stderr


def test_nothing_is_fetched_for_random_weights_or_an_existing_file(tmp_path, site) -> None:
    server, _ = site
    server.seen.clear()
    assert _fetch(tmp_path, server.url, RPSAM2_ALLOW_RANDOM_WEIGHTS="1").returncode == 0
    own = tmp_path / "mine.pt"
    own.write_bytes(b"x")
    assert _fetch(tmp_path, server.url, RPSAM2_SAM2_CHECKPOINT=str(own)).returncode == 0
    missing = _fetch(tmp_path, server.url, RPSAM2_SAM2_CHECKPOINT=str(tmp_path / "nope.pt"))
    assert missing.returncode == 2 and "not one of Meta's files" in missing.stderr
    assert server.seen == []
