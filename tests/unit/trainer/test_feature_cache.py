"""The trainer's embedding cache reads back from disk without encoding."""

from __future__ import annotations

import pytest
import torch

from rpsam2_backend.engine.embedding_cache import image_key
from trainer.feature_cache import FeatureCache


def test_feature_cache_reads_back_from_disk_without_encoding(sam2_engine, voc, voc_feature_cache):
    first = voc_feature_cache.get(voc["rgb"])
    before = sam2_engine.encode_count
    fresh = FeatureCache(sam2_engine, voc_feature_cache.dir.parent.parent)  # same root, empty memory
    assert image_key(voc["rgb"]) in fresh
    again = fresh.get(voc["rgb"])
    assert sam2_engine.encode_count == before
    assert (fresh.encoded, fresh.disk_hits) == (0, 1)
    # The first process sees the same (storage-dtype) numbers as later ones: seeded runs repeat.
    assert torch.equal(first.image_embed, again.image_embed)
    assert all(torch.equal(a, b) for a, b in zip(first.high_res_feats, again.high_res_feats, strict=True))
    assert again.orig_hw == voc["rgb"].shape[:2]
    assert fresh.get(None, image_key(voc["rgb"])).orig_hw == again.orig_hw
    with pytest.raises(KeyError):
        FeatureCache(sam2_engine, None).get(None, "0" * 64)
