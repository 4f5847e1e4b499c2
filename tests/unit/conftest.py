"""Fixtures of the unit tests: the real Flask app on random-weight hiera_t (``backend``)."""

from __future__ import annotations

import pytest

from rpsam2_backend.jobs.runtime import Runtime, set_runtime
from rpsam2_backend.web.app import create_app
from tests.conftest import make_random_settings, save_png
from tests.support.backend_app import CONFIG


@pytest.fixture(scope="module")
def backend(sam2_engine, voc, arc2017, tmp_path_factory):
    # One app and one embedding cache for the module: encoding is the slow part on CPU.
    tmp_path = tmp_path_factory.mktemp("backend")
    random_settings = make_random_settings(tmp_path)
    root = tmp_path / "files"
    save_png(root / "voc.png", voc["rgb"])
    save_png(root / "arc.png", arc2017["rgb"])  # another size: page 2 of multi-image tasks
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (root / "empty.png").write_bytes(b"")
    runtime = Runtime(random_settings, engine=sam2_engine)
    set_runtime(runtime)
    app = create_app(random_settings, warm=False)
    client = app.test_client()
    resp = client.post("/setup", json={"project": "1.1", "schema": CONFIG})
    assert resp.status_code == 200, resp.data
    yield client, runtime
    set_runtime(None)
