"""``ShiftBlockTrainer`` (§3.2) with random-weight SAM2 hiera_t on the real VOC photo: it learns, only the
block gets gradients, and clicks on several images share one decoder call.

CPU budget: every run uses a 2-layer block, 1-2 objects and 2-3 clicks per object per step; the
VOC image is encoded once per session (``voc_feature_cache``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.trainer.support_shift import SMALL_GRID, TWO_LAYERS, train_config, voc_sample
from trainer.datasets.base import ObjectMask, Sample
from trainer.prompts import click_points
from trainer.shift.candidates import CandidateGenerator, GridSpec, grid_points, nearest_candidate_distance
from trainer.shift.config import TrainConfig
from trainer.shift.objects import TrainObject, prepare_objects
from trainer.shift.trainer import ShiftBlockTrainer


def _loss_and_distance(trainer: ShiftBlockTrainer, objects, clicks) -> tuple[float, float]:
    trainer.block.eval()
    with torch.no_grad():
        groups = trainer.forward_objects(objects, clicks)
    n = sum(g[2] for g in groups)
    loss = sum(float(terms.total) * k for terms, _, k, _ in groups) / n
    dist = sum(float(nearest_candidate_distance(refined, cands).mean()) * k for _, refined, k, cands in groups) / n
    return loss, dist


def test_training_lowers_compound_loss_and_distance_to_candidates(sam2_engine, voc, voc_feature_cache):
    """Overfit a fixed small set of clicks: the compound loss and the mean distance of the refined
    points to their nearest candidate both go down (the block learns to move clicks)."""
    config = TrainConfig(steps=8, batch_size=2, points_per_object=2, lr=5e-4, grid=SMALL_GRID, shift=TWO_LAYERS,
                         val_seeds=0, progress=False)
    candidates = CandidateGenerator(sam2_engine, config.grid, config.eps)
    objects = prepare_objects([voc_sample(voc, [0, 1])], voc_feature_cache, candidates)
    trainer = ShiftBlockTrainer(sam2_engine, config, objects, [], voc_feature_cache)
    clicks = {o.key: click_points(o.mask(), np.random.default_rng([7, i]), 2) for i, o in enumerate(objects)}

    def batch_clicks():
        return [clicks[trainer.train_objects[i].key] for i in trainer.batch_for_step(trainer.step)]

    all_clicks = [clicks[o.key] for o in objects]
    loss_before, dist_before = _loss_and_distance(trainer, objects, all_clicks)
    rows = [trainer.train_step(batch_clicks()) for _ in range(config.steps)]
    loss_after, dist_after = _loss_and_distance(trainer, objects, all_clicks)

    assert all(np.isfinite(r["loss"]) for r in rows)
    print(f"loss {loss_before:.4f} -> {loss_after:.4f}, distance {dist_before:.4f} -> {dist_after:.4f}")
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    assert dist_after < dist_before - 0.01, (dist_before, dist_after)
    # SAM2 stayed frozen: nothing but the shift block has gradients or changed.
    assert all(p.grad is None for p in sam2_engine.model.parameters())


def test_dice_term_alone_reaches_the_block_through_frozen_sam2(sam2_engine, voc, voc_feature_cache):
    config = TrainConfig(steps=1, batch_size=1, points_per_object=2, beta=0.0, gamma=0.0, grid=SMALL_GRID,
                         shift=TWO_LAYERS, val_seeds=0, progress=False)
    objects = prepare_objects(
        [voc_sample(voc, [2])], voc_feature_cache, CandidateGenerator(sam2_engine, config.grid)
    )
    trainer = ShiftBlockTrainer(sam2_engine, config, objects, [], voc_feature_cache)
    row = trainer.train_step()
    assert row["distance"] > 0 and row["dice"] > 0  # logged, though only Dice is weighted
    assert row["loss"] == pytest.approx(row["dice"])
    grads = [p.grad for p in trainer.block.parameters()]
    assert trainer.block.phi.weight.grad is not None and trainer.block.phi.weight.grad.abs().sum() > 0
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) >= len(grads) // 2
    assert all(p.grad is None for p in sam2_engine.model.parameters())


def test_objects_of_different_images_share_one_decoder_call(sam2_engine, voc, voc_feature_cache):
    """Clicks on two images of one size are stacked into one refine + decode; same numbers as apart."""
    from rpsam2_backend.engine.embedding_cache import image_key
    from rpsam2_backend.engine.features import ImageFeatures

    flipped_rgb = np.ascontiguousarray(voc["rgb"][:, ::-1])
    feats = voc_feature_cache.get(voc["rgb"])
    table = {  # flipped features stand in for a second encoded image: no encoder run
        image_key(voc["rgb"]): feats,
        image_key(flipped_rgb): ImageFeatures(
            feats.image_embed.flip(-1), [t.flip(-1) for t in feats.high_res_feats], feats.orig_hw
        ),
    }

    class Features:
        def get(self, image, image_hash=None):
            return table[image_hash or image_key(image)]

    first = voc_sample(voc, [0])
    mask = np.ascontiguousarray(voc["masks"][int(first.objects[0].object_id[3:])][:, ::-1].astype(bool))
    second = Sample("voc-flipped", [ObjectMask("m", "thing", mask)], image_loader=lambda: flipped_rgb)
    config = train_config(None, cache_dir=None, grid=GridSpec(target_points=4))
    objects = prepare_objects([first, second], Features(), CandidateGenerator(sam2_engine, config.grid))
    trainer = ShiftBlockTrainer(sam2_engine, config, objects, [], Features())
    clicks = [click_points(o.mask(), np.random.default_rng([3, i]), 2) for i, o in enumerate(objects)]
    with torch.no_grad():
        (joint,) = trainer.forward_objects(objects, clicks)
        apart = [trainer.forward_objects([o], [c])[0] for o, c in zip(objects, clicks, strict=True)]
    assert joint[2] == 4
    torch.testing.assert_close(joint[1], torch.cat([a[1] for a in apart]), rtol=1e-5, atol=1e-6)
    for name in ("total", "dice", "distance", "outside"):
        expected = (getattr(apart[0][0], name) + getattr(apart[1][0], name)) / 2
        torch.testing.assert_close(getattr(joint[0], name), expected, rtol=1e-4, atol=1e-5)


def test_steps_follow_the_cosine_schedule_with_sam2s_groups(sam2_engine, voc, voc_feature_cache):
    from trainer.shift.optim import scheduled_lr

    config = train_config(None, cache_dir=None, steps=3, lr=1e-3)
    assert (config.weight_decay, config.grad_clip, config.lr_schedule) == (0.1, 0.1, "cosine")
    objects = prepare_objects([voc_sample(voc, [2])], voc_feature_cache, CandidateGenerator(sam2_engine, config.grid))
    trainer = ShiftBlockTrainer(sam2_engine, config, objects, [], voc_feature_cache)
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.1, 0.0]
    rows = [trainer.train_step() for _ in range(3)]
    assert [r["lr"] for r in rows] == pytest.approx([scheduled_lr(s, 3, 1e-3) for s in range(3)])
    assert rows[0]["lr"] == pytest.approx(1e-3) and rows[1]["lr"] == pytest.approx(1e-4 + 0.45e-3 * 1.5)
    assert all(g["lr"] == pytest.approx(rows[-1]["lr"]) for g in trainer.optimizer.param_groups)


def test_augmented_steps_encode_augmented_images_and_find_candidates_on_the_fly(sam2_engine, voc):
    """``augment``: no candidates or features precomputed for training; each step encodes its (augmented)
    images in one encoder call and decodes the augmented objects' grid points for their candidates."""
    config = train_config(None, cache_dir=None, steps=1, batch_size=2, augment=True, grid=GridSpec(target_points=6))
    objects = prepare_objects([voc_sample(voc, [0, 1])], None, None)
    assert all(len(o.grid) == 0 for o in objects)  # nothing precomputed
    trainer = ShiftBlockTrainer(sam2_engine, config, objects, [], features=None)
    encodes = sam2_engine.encode_count
    augmented, feats = trainer.augmented_batch([trainer.train_objects[i] for i in trainer.batch_for_step(0)],
                                               trainer.batch_for_step(0))
    assert sam2_engine.encode_count - encodes == 1  # both objects are on one image: one augmented copy
    assert len(feats) == 2 and all(f.image_embed.shape[0] == 1 for f in feats)
    for aug in augmented:
        mask = aug.mask()
        assert len(aug.candidates_px) >= 1 and len(aug.grid) >= len(aug.candidates_px)
        cols, rows = np.floor(aug.candidates_px).astype(int).T
        assert mask[rows, cols].all()  # candidates lie on the augmented object
    originals = {o.key: o.mask() for o in objects}
    assert any(not np.array_equal(a.mask(), originals[a.key.split("#")[0]]) for a in augmented)
    row = trainer.train_step()
    assert np.isfinite(row["loss"]) and sam2_engine.encode_count - encodes == 2
    assert trainer.block.phi.weight.grad is not None


def test_objects_of_one_image_share_one_augmentation(sam2_engine, voc):
    """SAM2 augments an image together with all its masks: two objects of one image in a batch get the same
    draw (one augmented image, one encoder run, shared features), not one draw each."""
    from trainer.augment import augment

    config = train_config(None, cache_dir=None, steps=1, batch_size=2, augment=True, grid=GridSpec(target_points=4),
                          seed=3)
    objects = prepare_objects([voc_sample(voc, [0, 1])], None, None)
    trainer = ShiftBlockTrainer(sam2_engine, config, objects, [], features=None)
    indices = trainer.batch_for_step(0)
    batch = [trainer.train_objects[i] for i in indices]
    encodes = sam2_engine.encode_count
    augmented, feats = trainer.augmented_batch(batch, indices)
    assert sam2_engine.encode_count - encodes == 1
    assert feats[0] is feats[1] and augmented[0].image_hash == augmented[1].image_hash
    # the masks are the two original masks moved by one draw (seeded by the image's first object)
    _, expected = augment(voc["rgb"], [o.mask() for o in batch], np.random.default_rng([3, 0, indices[0], 1]))
    for aug, mask in zip(augmented, expected, strict=True):
        np.testing.assert_array_equal(aug.mask(), mask)


@pytest.mark.parametrize("mode", ["area", "grid"])
def test_training_clicks_come_from_the_area_or_the_objects_grid(sam2_engine, voc, mode):
    """``train_clicks="grid"`` (the paper's "grid sampling of points in each object and refine 10 random
    points"): a step refines distinct grid points of each object, seeded by (seed, step, object);
    ``"area"`` draws sub-pixel clicks anywhere on the object."""
    masks = voc["masks"].astype(bool)
    mask = masks[int(np.argmax([m.sum() for m in masks]))]
    grid = grid_points(mask, GridSpec(target_points=64))
    obj = TrainObject(key="voc/big", class_name="thing", image_hash="voc", orig_hw=mask.shape,
                      packed_mask=np.packbits(mask.reshape(-1)), grid=grid, candidates_px=grid[:1], best_dice=1.0,
                      sample=None)
    config = train_config(None, cache_dir=None, steps=2, points_per_object=10, val_seeds=0, train_clicks=mode)
    trainer = ShiftBlockTrainer(sam2_engine, config, [obj], [], features=None)
    seen = []
    trainer.forward_objects = lambda objects, points, features=None: seen.append(points) or []
    trainer.train_step()
    trainer.train_step()
    first, second = (np.asarray(p[0]) for p in seen)
    assert first.shape == (10, 2) and not np.array_equal(first, second)  # new clicks every step
    on_grid = {tuple(g) for g in grid}
    cols, rows = np.floor(first).astype(int).T
    assert mask[rows, cols].all()
    if mode == "grid":
        assert all(tuple(p) in on_grid for p in first) and len({tuple(p) for p in first}) == 10
        trainer.step = 0
        np.testing.assert_array_equal(trainer.draw_clicks(obj, 0), first)  # seeded by (seed, step, object)
    else:
        assert not any(tuple(p) in on_grid for p in first)
