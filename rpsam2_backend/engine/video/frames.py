"""Video frames for SAM2's video predictor, decoded one at a time.

sam2 1.1.0 loads a whole video up front (a JPEG folder or an MP4 through decord) as one float
tensor: 12 MiB per frame at 1024, so 12 GiB for a 1000-frame case.  Its tracker only ever asks
``len(images)`` and ``images[t]`` (``_get_image_feature``), so ``LazyFrames`` stands in for that
tensor and decodes frame ``t`` when asked, with exactly sam2's preprocessing
(``sam2.utils.misc._load_img_as_tensor``: PIL resize to S x S with its default bicubic filter,
aspect ratio squashed, /255, ImageNet mean/std), keeping only the last two frames.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from rpsam2_backend.core.errors import BadRequest

_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def check_rgb(frame: np.ndarray, index: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape[:2]:
        raise BadRequest(f"frame {index} is not an RGB uint8 image (H, W, 3): {frame.dtype} {frame.shape}")
    return frame


def to_model_input(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """One RGB uint8 frame -> sam2's normalised float32 [3, S, S] tensor."""
    small = np.asarray(Image.fromarray(frame).resize((image_size, image_size)))
    tensor = torch.from_numpy(small / 255.0).permute(2, 0, 1).float()
    return (tensor - _MEAN) / _STD


class LazyFrames:
    """``inference_state["images"]`` for frames read on demand.

    ``frames[t]`` must give an RGB uint8 (H, W, 3) array: a list of arrays, or any sequence that
    decodes a file when indexed.  Every frame must have the size ``video_hw`` (the seed frame's),
    else BadRequest: masks and frames of one video share one size.
    """

    def __init__(
        self, frames: Sequence[np.ndarray], image_size: int, video_hw: tuple[int, int],
        device: torch.device | str = "cpu", keep: int = 2,
    ) -> None:
        self.frames = frames
        self.image_size = image_size
        self.video_hw = (int(video_hw[0]), int(video_hw[1]))
        self.device = torch.device(device)
        self.keep = keep
        self.decoded = 0  # frames decoded so far (tests and logs: each frame once per direction)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        frame = check_rgb(self.frames[index], index)
        if frame.shape[:2] != self.video_hw:
            (h, w), (vh, vw) = frame.shape[:2], self.video_hw
            raise BadRequest(f"frame {index} is {w}x{h} but the seed frame is {vw}x{vh}: frames of one video "
                             f"must have one size")
        tensor = to_model_input(frame, self.image_size).to(self.device)
        self.decoded += 1
        self._cache[index] = tensor
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return tensor
