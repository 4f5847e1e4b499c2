"""LazyFrames hands sam2 exactly the tensors of its own JPEG-folder loader, one frame at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sam2.utils.misc import load_video_frames

from rpsam2_backend.core.errors import BadRequest
from rpsam2_backend.engine.video.frames import LazyFrames
from tests.support.video_clip import moving_clip


def test_frames_equal_sam2s_own_loader_and_are_decoded_on_demand(tmp_path):
    images, _ = moving_clip(3)
    for t, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{t:05d}.jpg", quality=95)
    official, height, width = load_video_frames(str(tmp_path), 256, offload_video_to_cpu=True,
                                                compute_device=torch.device("cpu"))
    decoded = [np.asarray(Image.open(tmp_path / f"{t:05d}.jpg").convert("RGB")) for t in range(3)]
    lazy = LazyFrames(decoded, 256, (height, width))
    assert len(lazy) == 3 and lazy.decoded == 0
    for t in (2, 0, 1):
        assert torch.equal(lazy[t], official[t])
    assert lazy.decoded == 3
    lazy[1]  # the last two stay decoded; the oldest is dropped
    lazy[0]
    assert lazy.decoded == 3
    lazy[2]
    assert lazy.decoded == 4


def test_a_frame_of_another_size_or_kind_is_refused_with_its_index():
    images, _ = moving_clip(2)
    lazy = LazyFrames([images[0], images[1][:80]], 256, images[0].shape[:2])
    lazy[0]
    with pytest.raises(BadRequest, match="frame 1 is 128x80 but the seed frame is 128x96"):
        lazy[1]
    with pytest.raises(BadRequest, match="frame 0 is not an RGB uint8 image"):
        LazyFrames([images[0].astype(np.float32)], 256, (96, 128))[0]
