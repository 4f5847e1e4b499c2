"""A generated surgical-looking clip: dark noisy frames, a red "instrument" sliding right and a
green one sliding left, with their true masks (what the video tests propagate and score)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 96, 128


def moving_clip(frames: int = 6, height: int = HEIGHT, width: int = WIDTH, seed: int = 0
                ) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    """(RGB uint8 frames, per frame {"Tool": mask, "Knife": mask})."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for t in range(frames):
        frame = (rng.random((height, width, 3)) * 60).astype(np.uint8)
        tool = np.zeros((height, width), bool)
        tool[height // 5 : height // 2, 8 + 6 * t : 8 + 6 * t + width // 3] = True
        knife = np.zeros((height, width), bool)
        knife[height // 2 + 8 : height - 10, width - 40 - 5 * t : width - 10 - 5 * t] = True
        frame[tool] = (220, 40, 40)
        frame[knife] = (40, 200, 60)
        images.append(frame)
        masks.append({"Tool": tool, "Knife": knife})
    return images, masks


def save_frames(folder: Path, images: list[np.ndarray], name: str = "frame_{:03d}.png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, image in enumerate(images):
        path = folder / name.format(t + 1)
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths
