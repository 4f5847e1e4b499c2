"""The heavy state of one process (SAM2, shift block, embedding cache), built once and shared.

label-studio-ml builds a model object per project/setup call; keeping SAM2 there would load it
again and again.  The inline server and the RQ worker both call ``get_runtime()``; the layers
above reach it only by dotted name (``core.names``): ``warm_runtime`` and ``inline_health`` for
the inline dispatcher, ``load_worker_runtime`` and ``runtime_stats`` for the RQ worker.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from rpsam2_backend.core.contracts import LabelStudioAccess, RuntimeStats
from rpsam2_backend.core.names import DECODED_MASK_MEMORY, URL_KEY_MEMORY
from rpsam2_backend.core.settings import Settings, get_settings
from rpsam2_backend.engine.build import resolve_device
from rpsam2_backend.engine.checkpoint_store import CheckpointStore
from rpsam2_backend.engine.decoder_weights import DecoderSwapper
from rpsam2_backend.engine.embedding_cache import EmbeddingCache, image_key
from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
from rpsam2_backend.engine.predictor import RPSAM2Predictor
from rpsam2_backend.engine.sam2_engine import SAM2Engine, shared_engine
from rpsam2_backend.jobs.decoded_masks import DecodedMasks
from rpsam2_backend.labelstudio.images import ImageLoader, LoadedImage

log = logging.getLogger(__name__)


class _VersionSource:
    """Where a shift block / decoder comes from: a pinned path, or the live pointer of the store."""

    def __init__(self, pinned: str, store: CheckpointStore) -> None:
        self.pinned = pinned
        self.store = store
        self.stamp: tuple[str | None, float] | None = None

    def current(self) -> tuple[str, Path | None]:
        if self.pinned:
            path = Path(self.pinned)
            if not path.is_dir():
                raise FileNotFoundError(f"checkpoint directory {path} does not exist")
            return path.name, path
        name = self.store.live()
        return (name or ""), (self.store.path(name) if name else None)

    def changed(self) -> bool:
        if self.pinned:
            return self.stamp is None
        stamp = self.store.live_stamp()
        return stamp != self.stamp

    def mark(self) -> None:
        self.stamp = ("pinned", 0.0) if self.pinned else self.store.live_stamp()


class Runtime:
    def __init__(self, settings: Settings, engine: SAM2Engine | None = None) -> None:
        """``engine``: an already built SAM2 (tests share one); otherwise built from settings."""
        self.settings = settings
        model = settings.model
        if engine is None:
            engine = shared_engine(model.sam2_config, settings.resolved_checkpoint(), resolve_device(model.device))
        self.cache = EmbeddingCache(model.cache_mb * 1024 * 1024)
        self.predictor = RPSAM2Predictor(engine, cache=self.cache)
        self.decoded = DecodedMasks(DECODED_MASK_MEMORY)
        self.images = ImageLoader(settings)
        self._decoders = DecoderSwapper(engine)
        self._shift_source = _VersionSource(model.shift_checkpoint, CheckpointStore(model.model_dir, "shift"))
        self._decoder_source = _VersionSource(model.decoder_checkpoint, CheckpointStore(model.model_dir, "decoder"))
        self._reload_lock = threading.Lock()
        # url -> image key: a repeat click skips the download when its embedding is cached.
        # Label Studio never rewrites the bytes behind a task URL (uploads get new names).
        self._url_keys: OrderedDict[str, str] = OrderedDict()
        self._setup_loaders: dict[tuple[str, str], ImageLoader] = {}
        self.refresh_versions()
        block = self.predictor.shift_block
        log.info(
            "runtime ready: device=%s config=%s checkpoint=%s shift=%s (%s trainable parameters) version=%s",
            engine.device, engine.config, engine.checkpoint or "RANDOM WEIGHTS",
            self.predictor.shift_version or "none (plain SAM2)",
            f"{block.num_parameters():,}" if block else 0, self.predictor.version,
        )

    @property
    def engine(self) -> SAM2Engine:
        return self.predictor.engine

    def refresh_versions(self) -> bool:
        """Load a newly promoted shift block / decoder; a stat() per source when nothing changed."""
        changed = False
        with self._reload_lock:
            if self._shift_source.changed():
                name, path = self._shift_source.current()
                block = ShiftBlock.load(path, self.engine.device) if path else None
                self.predictor.set_shift_block(block, name)
                self._shift_source.mark()
                log.info("shift block now %s", name or "none (plain SAM2)")
                changed = True
            if self._decoder_source.changed():
                name, path = self._decoder_source.current()
                self._decoders.load(path)
                self.predictor.set_decoder_version(name)
                self._decoder_source.mark()
                log.info("mask decoder now %s", name or "SAM2 released weights")
                changed = True
        return changed

    def image_loader(self, label_studio: LabelStudioAccess | None = None) -> ImageLoader:
        """The configured loader, or one for the Label Studio host/token that /setup announced
        (used only when this process has no LABEL_STUDIO_URL of its own)."""
        if not label_studio or self.settings.label_studio.url or not label_studio.get("url"):
            return self.images
        key = (label_studio["url"], label_studio.get("token", ""))
        loader = self._setup_loaders.get(key)
        if loader is None:
            settings = self.settings.with_("label_studio", url=key[0], api_key=key[1])
            loader = self._setup_loaders[key] = ImageLoader(settings)
        return loader

    def load_image(self, url: str, label_studio: LabelStudioAccess | None = None) -> tuple[LoadedImage | None, str]:
        """(image or None when its embedding is already cached, its ``image_key``)."""
        known = self._url_keys.get(url)
        if known is not None and known in self.cache:
            return None, known
        image = self.image_loader(label_studio).load(url)
        key = image_key(image.rgb)
        self._url_keys[url] = key
        self._url_keys.move_to_end(url)
        while len(self._url_keys) > URL_KEY_MEMORY:
            self._url_keys.popitem(last=False)
        return image, key


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime(settings: Settings | None = None) -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(settings or get_settings())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install (or drop, with None) the process runtime; tests use it to share one SAM2."""
    global _runtime
    with _runtime_lock:
        _runtime = runtime


# --- reached by dotted name from the queue layer (core.names) ------------------------------------


def warm_runtime(settings: Settings) -> None:
    """Inline mode: build SAM2 at start so that a bad setting fails before the first click."""
    get_runtime(settings)


def load_worker_runtime(settings: Settings) -> Runtime:
    """An RQ worker's runtime; ConfigError when the checkpoint is missing."""
    if settings.model.allow_random_weights and settings.resolved_checkpoint() is None:
        import torch

        # Random weights only in tests and smoke runs: seed them so that every worker computes
        # the same masks, whichever worker a click lands on.
        torch.manual_seed(0)
    return get_runtime(settings)


def runtime_stats(rt: Runtime) -> RuntimeStats:
    """What a process holding SAM2 says about itself (worker presence, inline /health)."""
    engine = rt.engine
    return {
        "device": str(engine.device),
        "config": engine.config,
        "checkpoint": engine.checkpoint or "RANDOM WEIGHTS",
        "version": rt.predictor.version,
        "shift_version": rt.predictor.shift_version,
        "decoder_version": rt.predictor.decoder_version,
        "encodes": engine.encode_count,
        "cache": rt.cache.stats(),
    }


def inline_health() -> dict[str, Any]:
    """/health's dispatch part in inline mode; never builds a runtime just to report on it."""
    with _runtime_lock:
        rt = _runtime
    if rt is None:
        return {"mode": "inline", "workers": []}
    stats = {"name": "inline", "queues": [], **runtime_stats(rt)}
    return {"mode": "inline", "workers": [stats], "model_versions": [stats["version"]]}
