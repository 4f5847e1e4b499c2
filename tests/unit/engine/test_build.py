"""Building SAM2: packaged configs by name, other SAM2-architecture configs from a file (MedSAM2's 512 px)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rpsam2_backend.core.errors import ConfigError
from rpsam2_backend.engine.build import load_sam2
from rpsam2_backend.engine.sam2_engine import SAM2Engine, feature_sizes


def _t512_config(tmp_path: Path) -> Path:
    """MedSAM2's sam2.1_hiera_t512.yaml is the packaged hiera_t with image_size 512 and RoPE feat_sizes 32."""
    import sam2

    text = (Path(sam2.__file__).parent / "configs/sam2.1/sam2.1_hiera_t.yaml").read_text()
    assert text.count("feat_sizes: [64, 64]") == 2 and text.count("image_size: 1024") == 1
    path = tmp_path / "sam2.1_hiera_t512.yaml"
    path.write_text(text.replace("feat_sizes: [64, 64]", "feat_sizes: [32, 32]").replace(
        "image_size: 1024", "image_size: 512"))
    return path


def test_a_config_file_outside_the_package_builds_and_encodes_at_its_resolution(tmp_path):
    config = _t512_config(tmp_path)
    torch.manual_seed(0)
    engine = SAM2Engine(load_sam2(str(config), None, "cpu"), str(config), None, "cpu")
    assert engine.image_size == 512 and feature_sizes(512) == [(128, 128), (64, 64), (32, 32)]
    decoder_args = engine.model.sam_mask_decoder
    assert decoder_args.dynamic_multimask_via_stability  # build_sam2's post-processing applies too
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    feats = engine.encode(image)
    assert tuple(feats.image_embed.shape) == (1, 256, 32, 32)
    assert [tuple(t.shape[-2:]) for t in feats.high_res_feats] == [(128, 128), (64, 64)]
    masks, scores = engine.decode_masks(feats, torch.tensor([[[40.0, 30.0]]]), torch.ones(1, 1, dtype=torch.int))
    assert masks.shape == (1, 60, 80) and scores.shape == (1,)


def test_a_checkpoint_of_another_architecture_is_refused_with_the_setting_named(tmp_path):
    config = _t512_config(tmp_path)
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"image_encoder.not_a_key": torch.zeros(1)}}, bad)
    with pytest.raises(ConfigError, match="does not match config"):
        load_sam2(str(config), str(bad), "cpu")
    with pytest.raises(ConfigError, match="RPSAM2_SAM2_CONFIG"):
        load_sam2(str(tmp_path / "missing.yaml"), None, "cpu")
