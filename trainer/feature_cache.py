"""Image embeddings computed once per (image content, SAM2 encoder) and kept on disk and in memory.

SAM2 is frozen during shift-block training, so an image's features never change: the encoder
(~0.1 s on a GPU, 3-17 s on CPU per image) runs once per image for the lifetime of the cache
directory, not once per epoch.  Keys:

- the image's *content* hash, ``engine.embedding_cache.image_key`` (the backend's key too): sha256
  of the decoded RGB pixels and their shape (two files with the same pixels share an entry; a
  re-encoded JPEG with other pixels does not);
- the SAM2 *encoder identity*: config name + sha256 of the checkpoint file, or, for random weights
  (tests, smoke runs), a hash of every parameter -- two random models never share entries.

Disk layout: ``ROOT/features/<identity[:16]>/<hash[:2]>/<hash>.pt`` holding
``ImageFeatures.state()`` (``torch.save``, loaded with ``weights_only=True``).  Files are written to
a temporary name and renamed, so a crashed run never leaves a half-written entry.  By default the
tensors are stored as float16 (8 MB instead of 16 MB per image; relative error ~1e-3, well below
the bf16 autocast used for training on CUDA) and come back as float32.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from pathlib import Path

import numpy as np
import torch

from rpsam2_backend.engine.embedding_cache import EmbeddingCache, image_key
from rpsam2_backend.engine.features import ImageFeatures
from rpsam2_backend.engine.sam2_engine import SAM2Engine
from trainer.io.atomic import atomic_torch_save

log = logging.getLogger(__name__)

_identity_memo: weakref.WeakKeyDictionary[SAM2Engine, str] = weakref.WeakKeyDictionary()
_file_hash_memo: dict[tuple[str, int, int], str] = {}


def mask_hash(mask: np.ndarray) -> str:
    mask = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    h = hashlib.sha256(f"{mask.shape}|".encode())
    h.update(np.packbits(mask).tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Content hash of a (checkpoint) file, memoised per (path, size, mtime) within the process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_hash_memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _file_hash_memo[key] = h.hexdigest()
    return _file_hash_memo[key]


def module_hash(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, shapes and values)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def encoder_identity(engine: SAM2Engine) -> str:
    """What determines an image's features: the config and the weights (see module docstring)."""
    if engine not in _identity_memo:
        if engine.checkpoint is not None:
            weights = f"checkpoint:{file_sha256(engine.checkpoint)}"
        else:
            weights = f"random:{module_hash(engine.model)}"
        _identity_memo[engine] = hashlib.sha256(f"{engine.config}|{weights}".encode()).hexdigest()
    return _identity_memo[engine]


def decoder_identity(engine: SAM2Engine) -> str:
    """Encoder identity + the mask decoder's current weights (a SAM2-FT decoder may be swapped in)."""
    decoder = module_hash(engine.model.sam_mask_decoder)
    prompt = module_hash(engine.model.sam_prompt_encoder)
    return hashlib.sha256(f"{encoder_identity(engine)}|{decoder}|{prompt}".encode()).hexdigest()


class FeatureCache:
    """Features by image content hash: an LRU in RAM (CPU tensors) in front of an optional disk cache.

    ``get(image)`` returns float32 features on ``engine.device``; the encoder runs only on a miss in
    both.  ``memory_bytes`` counts stored (float16: 8 MB per image) tensors.
    """

    def __init__(
        self,
        engine: SAM2Engine,
        root: str | Path | None = None,
        memory_bytes: int = 2 << 30,
        store_dtype: torch.dtype = torch.float16,
    ) -> None:
        self.engine = engine
        self.identity = encoder_identity(engine)
        self.dir = Path(root) / "features" / self.identity[:16] if root is not None else None
        self.memory_bytes = int(memory_bytes)
        self.store_dtype = store_dtype
        # The RAM tier is the backend's own embedding cache (LRU in bytes), holding store_dtype tensors.
        self._memory = EmbeddingCache(self.memory_bytes)
        self.encoded = 0
        self.disk_hits = 0

    def path(self, image_hash: str) -> Path | None:
        return self.dir / image_hash[:2] / f"{image_hash}.pt" if self.dir is not None else None

    def __contains__(self, image_hash: str) -> bool:
        path = self.path(image_hash)
        return image_hash in self._memory or (path is not None and path.is_file())

    @property
    def memory_hits(self) -> int:
        return self._memory.hits

    def get(self, image: np.ndarray | None, image_hash: str | None = None) -> ImageFeatures:
        """Features of ``image`` (RGB uint8); ``image`` may be None when ``image_hash`` is cached."""
        if image_hash is None:
            if image is None:
                raise ValueError("need an image or its content hash")
            image_hash = image_key(image)
        stored = self._memory.get(image_hash)
        if stored is None:
            stored = self._from_disk(image_hash)
            if stored is None:
                if image is None:
                    raise KeyError(f"features of image {image_hash[:12]} are not cached and no image was given")
                # Kept in the storage dtype from the start, so a run with a cold cache sees the same
                # numbers as one that reads them back from disk (seeded runs stay repeatable).
                stored = self._cast(self.engine.encode(image).to("cpu"), self.store_dtype)
                self.encoded += 1
                self._to_disk(image_hash, stored)
            else:
                self.disk_hits += 1
            self._memory.put(image_hash, stored)
        return self._cast(stored.to(self.engine.device), torch.float32)

    # --- tiers (both hold store_dtype tensors on the CPU) -------------------------------------
    @staticmethod
    def _cast(features: ImageFeatures, dtype: torch.dtype) -> ImageFeatures:
        return ImageFeatures(
            features.image_embed.to(dtype), [t.to(dtype) for t in features.high_res_feats], features.orig_hw
        )

    def _from_disk(self, key: str) -> ImageFeatures | None:
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            features = ImageFeatures.from_state(state)
        except Exception as exc:  # a truncated file from another tool: recompute rather than fail
            log.warning("ignoring unreadable feature cache entry %s: %s", path, exc)
            return None
        return self._cast(features, self.store_dtype)

    def _to_disk(self, key: str, features: ImageFeatures) -> None:
        path = self.path(key)
        if path is not None:
            atomic_torch_save(features.state(), path)

