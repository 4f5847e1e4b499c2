"""Atomic writes: a reader finds the old file or the new one, never a half-written one or a stray temp."""

from __future__ import annotations

import pytest
import torch

from trainer.io.atomic import atomic_path, atomic_text_file, atomic_torch_save, move_files_into


def test_atomic_path_replaces_the_target_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "sub" / "entry.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing visible before the rename
    assert target.read_bytes() == b"new"

    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["entry.bin"]  # the temp file is gone


def test_atomic_torch_save_round_trip(tmp_path):
    path = tmp_path / "state.pt"
    atomic_torch_save({"w": torch.arange(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_atomic_text_file_keeps_the_old_text_until_the_block_ends(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("old\n")
    with atomic_text_file(path) as f:
        f.write("new\n")
        assert path.read_text() == "old\n"
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_move_files_into_replaces_same_named_files_and_removes_the_source(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "weights.bin").write_text("old")
    (out / "other.txt").write_text("kept")
    src = tmp_path / ".tmp"
    src.mkdir()
    (src / "weights.bin").write_text("new")
    (src / "meta.json").write_text("{}")
    move_files_into(src, out)
    assert not src.exists()
    files = {p.name: p.read_text() for p in out.iterdir()}
    assert files == {"weights.bin": "new", "meta.json": "{}", "other.txt": "kept"}
