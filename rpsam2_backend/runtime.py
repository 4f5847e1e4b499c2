"""The heavy state of one process (SAM2, shift block, embedding cache), built once and shared.

label-studio-ml builds a model object per project/setup call; keeping SAM2 there would load it
again and again.  The inline server and the RQ worker both call ``get_runtime()``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

from rpsam2_backend.engine.cache import EmbeddingCache
from rpsam2_backend.engine.checkpoint_store import CheckpointStore
from rpsam2_backend.engine.predictor import RPSAM2Predictor
from rpsam2_backend.engine.sam2_model import DecoderSwapper, SAM2Engine
from rpsam2_backend.engine.shift_block import ShiftBlock
from rpsam2_backend.labelstudio.images import ImageLoader, LoadedImage
from rpsam2_backend.settings import Settings, get_settings

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
        engine = engine or SAM2Engine.build(
            settings.sam2_config, settings.resolved_checkpoint(), settings.resolved_device()
        )
        self.cache = EmbeddingCache(settings.cache_mb * 1024 * 1024)
        self.predictor = RPSAM2Predictor(engine, cache=self.cache)
        self.images = ImageLoader(settings)
        self._decoders = DecoderSwapper(engine)
        self._shift_source = _VersionSource(settings.shift_checkpoint, CheckpointStore(settings.model_dir, "shift"))
        self._decoder_source = _VersionSource(
            settings.decoder_checkpoint, CheckpointStore(settings.model_dir, "decoder")
        )
        self._reload_lock = threading.Lock()
        # url -> content hash: a repeat click skips the download when its embedding is cached.
        # Label Studio never rewrites the bytes behind a task URL (uploads get new names).
        self._url_hashes: OrderedDict[str, str] = OrderedDict()
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
                self.predictor.decoder_version = name
                self._decoder_source.mark()
                log.info("mask decoder now %s", name or "SAM2 released weights")
                changed = True
        return changed

    def image_loader(self, label_studio: dict | None = None) -> ImageLoader:
        """The configured loader, or one for the Label Studio host/token that /setup announced
        (used only when this process has no LABEL_STUDIO_URL of its own)."""
        if not label_studio or self.settings.label_studio_url or not label_studio.get("url"):
            return self.images
        key = (label_studio["url"], label_studio.get("token", ""))
        loader = self._setup_loaders.get(key)
        if loader is None:
            settings = self.settings.with_(label_studio_url=key[0], label_studio_api_key=key[1])
            loader = self._setup_loaders[key] = ImageLoader(settings)
        return loader

    def load_image(self, url: str, label_studio: dict | None = None) -> tuple[LoadedImage | None, str]:
        """(image or None when its embedding is already cached, content hash)."""
        known = self._url_hashes.get(url)
        if known is not None and known in self.cache:
            return None, known
        image = self.image_loader(label_studio).load(url)
        self._url_hashes[url] = image.sha256
        self._url_hashes.move_to_end(url)
        while len(self._url_hashes) > 10_000:
            self._url_hashes.popitem(last=False)
        return image, image.sha256


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
