"""Engine fixtures: the VOC image encoded once by random-weight hiera_t."""

from __future__ import annotations

import pytest

from rpsam2_backend.engine.features import ImageFeatures


@pytest.fixture(scope="module")
def voc_features(sam2_engine, voc) -> ImageFeatures:
    return sam2_engine.encode(voc["rgb"])
