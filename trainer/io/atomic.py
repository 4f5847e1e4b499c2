"""Writes that a reader never sees half done: write beside the target, then rename over it.

Readers of these files run concurrently with the writer (the backend loads a checkpoint
directory at any time; another training run reads the same cache) or after a crash (resume):
``os.replace`` on one filesystem is atomic, so they find the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import torch


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` to write to; renamed to ``path`` when the block succeeds.

    The temporary file is unique (``mkstemp``), so concurrent writers of one entry (two runs sharing
    a cache) never write into each other's file, and it is deleted when the block fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` through ``atomic_path``: a crash never leaves a truncated ``.pt`` behind."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@contextlib.contextmanager
def atomic_text_file(path: Path, newline: str | None = None) -> Iterator[TextIO]:
    """A text file ``.NAME.tmp`` beside ``path``, renamed to ``path`` when the block succeeds.

    One fixed temporary name, opened like a plain ``open(path, "w")``: the file gets the usual
    permissions (``mkstemp`` would make it private), which matters for logs others read.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline=newline) as f:
        yield f
    os.replace(tmp, path)


def move_files_into(src_dir: Path, dst_dir: Path) -> None:
    """Rename every file of ``src_dir`` into ``dst_dir`` (replacing same-named ones), then remove ``src_dir``.

    Each file appears whole; a directory written by a library in several files (weights, then
    metadata) is prepared in ``src_dir`` beside ``dst_dir`` and published this way.
    """
    for f in src_dir.iterdir():
        os.replace(f, dst_dir / f.name)
    src_dir.rmdir()
