"""The method's pieces on real sam2 code: shift block, batched decode, cache, checkpoint store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rpsam2_backend.engine.checkpoint_store import CheckpointStore
from rpsam2_backend.engine.embedding_cache import EmbeddingCache
from rpsam2_backend.engine.features import ImageFeatures
from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig
from rpsam2_backend.engine.predictor import PixelClick, RPSAM2Predictor


@pytest.fixture(scope="module")
def voc_features(sam2_engine, voc) -> ImageFeatures:
    return sam2_engine.encode(voc["rgb"])


def test_shift_block_parameter_counts_are_printed_and_plausible(capsys):
    six = ShiftBlock(ShiftBlockConfig(layers=6)).num_parameters()
    two = ShiftBlock(ShiftBlockConfig(layers=2)).num_parameters()
    print(f"shift block trainable parameters: 6 layers {six / 1e6:.2f} M (paper 12.1 M), "
          f"2 layers {two / 1e6:.2f} M (paper 5.8 M)")
    assert 9e6 < six < 13e6 and 3.5e6 < two < 6e6
    assert "6 layers" in capsys.readouterr().out


def test_shift_block_stays_inside_image_and_gradients_reach_parameters(voc_features):
    torch.manual_seed(1)
    block = ShiftBlock(ShiftBlockConfig(layers=2, max_shift=0.9))
    with torch.no_grad():
        block.phi.weight.normal_(std=5.0)  # push hard towards the borders
    points = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.01, 0.99], [0.5, 0.5]])
    embed = torch.randn(4, 256)
    out = block(points, embed, voc_features.image_embed)
    assert out.shape == (4, 2)
    assert (out >= 0).all() and (out <= 1).all()
    assert (out != points).any()
    # gradients: a default block on interior points (clamped or saturated points have none)
    block = ShiftBlock(ShiftBlockConfig(layers=2))
    out = block(torch.tensor([[0.3, 0.4], [0.6, 0.5]]), embed[:2], voc_features.image_embed)
    out.sum().backward()
    missing = [n for n, p in block.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == [], missing


def test_shift_moves_the_first_positive_click_only(sam2_engine, voc_features):
    block = ShiftBlock(ShiftBlockConfig(layers=2, max_shift=0.3))
    with torch.no_grad():
        block.phi.weight.normal_(std=1.0)
    pred = RPSAM2Predictor(sam2_engine, shift_block=block, shift_version="t1")
    clicks = [PixelClick(60, 50, positive=False), PixelClick(250, 180), PixelClick(300, 200)]
    seg = pred.segment(None, clicks, features=voc_features)
    assert seg.refined_point is not None and seg.refined_point != (250.0, 180.0)
    plain = RPSAM2Predictor(sam2_engine)
    seg0 = plain.segment(None, [PixelClick(250, 180)], features=voc_features)
    assert seg0.refined_point is None
    assert plain.version.startswith("sam2/") and pred.version.startswith("rpsam2/") and "shift-t1" in pred.version


def test_batched_decode_equals_one_by_one(sam2_engine, voc_features):
    coords = torch.tensor([[[40.0, 60.0]], [[250.0, 190.0]], [[480.0, 20.0]]])
    labels = torch.ones(3, 1, dtype=torch.int)
    masks, scores = sam2_engine.decode_masks(voc_features, coords, labels)
    for i in range(3):
        one, score = sam2_engine.decode_masks(voc_features, coords[i : i + 1], labels[i : i + 1])
        assert (one[0] != masks[i]).mean() < 1e-3
        assert abs(float(score[0]) - float(scores[i])) < 1e-4


def test_decode_is_differentiable_in_the_point(sam2_engine, voc_features):
    coords = torch.tensor([[[200.0, 150.0]]], requires_grad=True)
    low_res, _ = sam2_engine.decode_logits(voc_features, coords, torch.ones(1, 1, dtype=torch.int), multimask=False)
    low_res.mean().backward()
    assert coords.grad is not None and coords.grad.abs().sum() > 0


def test_dense_pe_is_computed_once_and_is_not_an_inference_tensor(sam2_engine, voc_features, monkeypatch):
    encoder = sam2_engine.model.sam_prompt_encoder
    reference = encoder.get_dense_pe()
    calls = []

    def counted():
        calls.append(1)
        return reference.clone()

    monkeypatch.setattr(encoder, "get_dense_pe", counted)
    sam2_engine._dense_pe = None  # as on a fresh engine: the first request comes from decode_masks
    coords = torch.tensor([[[200.0, 150.0]], [[60.0, 300.0]]])
    labels = torch.ones(2, 1, dtype=torch.int)
    sam2_engine.decode_masks(voc_features, coords, labels)  # runs under torch.inference_mode
    sam2_engine.decode_masks(voc_features, coords[:1], labels[:1])
    pe = sam2_engine.dense_pe()
    assert calls == [1]
    assert sam2_engine.dense_pe() is pe
    assert torch.equal(pe, reference)
    assert not pe.is_inference() and not pe.requires_grad

    # ... so a training step can still differentiate through the decoder afterwards.
    point = torch.tensor([[[200.0, 150.0]]], requires_grad=True)
    low_res, _ = sam2_engine.decode_logits(voc_features, point, torch.ones(1, 1, dtype=torch.int), multimask=False)
    low_res.mean().backward()
    assert point.grad is not None
    assert torch.isfinite(point.grad).all() and point.grad.abs().sum() > 0
    assert calls == [1]


def test_shift_block_round_trip(tmp_path, voc_features):
    block = ShiftBlock(ShiftBlockConfig(layers=1))
    block.save(tmp_path / "v", extra={"note": "x"})
    again = ShiftBlock.load(tmp_path / "v")
    pts, emb = torch.rand(3, 2), torch.randn(3, 256)
    with torch.no_grad():
        assert torch.equal(block.eval()(pts, emb, voc_features.image_embed), again(pts, emb, voc_features.image_embed))
    with pytest.raises(FileNotFoundError, match="rpsam2-train"):
        ShiftBlock.load(tmp_path)


def _features(nbytes_side: int) -> ImageFeatures:
    return ImageFeatures(torch.zeros(1, nbytes_side), [], (1, 1))


def test_cache_is_lru_bounded_in_bytes_and_counts():
    cache = EmbeddingCache(max_bytes=3 * 400)  # three entries of 100 float32
    for key in "abc":
        cache.put(key, _features(100))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", _features(100))
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert cache.bytes == 1200 and cache.evictions == 1
    cache.put("huge", _features(10_000))
    assert "huge" not in cache and len(cache) == 3
    assert cache.stats()["hits"] == 1


def test_cache_computes_once_under_concurrency():
    import threading
    import time

    cache = EmbeddingCache(1 << 20)
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.05)
        return _features(10)

    threads = [threading.Thread(target=cache.get_or_compute, args=("k", compute)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_checkpoint_store_promote_refuse_rollback(tmp_path):
    src = tmp_path / "ck"
    ShiftBlock(ShiftBlockConfig(layers=1)).save(src)
    store = CheckpointStore(tmp_path / "models", "shift")
    assert store.live() is None
    v1 = store.add(src, {"mdsc": 0.5})
    v2 = store.add(src, {"mdsc": 0.6})
    assert (v1, v2) == ("v0001", "v0002") and store.live() is None
    store.promote(v1, "first")
    store.promote(v2, "better")
    store.refuse("v0002", "not better")
    assert store.live() == "v0002" and store.metadata(v2)["mdsc"] == 0.6
    assert store.rollback() == "v0001"
    assert store.rollback() is None and store.live() is None
    with pytest.raises(ValueError, match="nothing to roll back"):
        store.rollback()
    assert [e["event"] for e in store.history()] == ["promote", "promote", "refuse", "rollback", "rollback"]
    with pytest.raises(FileNotFoundError, match="v0009"):
        store.promote("v0009")


def test_runtime_picks_up_a_promoted_shift_block(random_settings, sam2_engine, tmp_path):
    from rpsam2_backend.jobs.runtime import Runtime

    rt = Runtime(random_settings, engine=sam2_engine)
    assert rt.predictor.shift_block is None and rt.refresh_versions() is False
    ShiftBlock(ShiftBlockConfig(layers=1)).save(tmp_path / "ck")
    store = CheckpointStore(random_settings.model.model_dir, "shift")
    store.promote(store.add(tmp_path / "ck"))
    assert rt.refresh_versions() is True
    assert rt.predictor.shift_block is not None and "shift-v0001" in rt.predictor.version
    assert rt.refresh_versions() is False


def test_settings_without_checkpoint_fail_with_download_command():
    from rpsam2_backend.core.errors import ConfigError
    from rpsam2_backend.core.settings import Settings

    with pytest.raises(ConfigError) as err:
        Settings.from_env({"RPSAM2_CHECKPOINT_DIR": "/nonexistent"}).resolved_checkpoint()
    assert "RPSAM2_SAM2_CHECKPOINT" in err.value.message and "make checkpoints" in err.value.message
    with pytest.raises(ConfigError, match="RPSAM2_CACHE_MB"):
        Settings.from_env({"RPSAM2_CACHE_MB": "lots"})
    with pytest.raises(ConfigError, match="RPSAM2_ALLOW_RANDOM_WEIGHTS"):
        Settings.from_env({"RPSAM2_ALLOW_RANDOM_WEIGHTS": "maybe"})
    assert np.isclose(Settings.from_env({"RPSAM2_PREDICT_TIMEOUT": "2.5"}).queue.predict_timeout, 2.5)


def test_points_of_one_image_are_refined_independently_as_one_sequence(voc_features):
    """The shared-image fast path (one sequence, diagonal mask) equals refining point by point."""
    torch.manual_seed(3)
    block = ShiftBlock(ShiftBlockConfig(layers=2, max_shift=0.5)).eval()
    with torch.no_grad():
        block.phi.weight.normal_(std=0.5)
        points, embeds = torch.rand(5, 2), torch.randn(5, 256)
        together = block(points, embeds, voc_features.image_embed)
        alone = torch.cat([block(points[i : i + 1], embeds[i : i + 1], voc_features.image_embed) for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_zero_shift_returns_the_click_exactly(sam2_engine, voc_features):
    block = ShiftBlock(ShiftBlockConfig(layers=1))
    with torch.no_grad():
        block.phi.weight.zero_()
    pred = RPSAM2Predictor(sam2_engine, shift_block=block)
    points = torch.tensor([[123.456, 78.9], [499.5, 374.5], [0.25, 0.75]])
    with torch.no_grad():
        assert torch.equal(pred.refine(voc_features, points), points)
