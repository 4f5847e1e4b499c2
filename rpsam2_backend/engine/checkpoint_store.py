"""Versioned model checkpoints under MODEL_DIR with an atomic "live" pointer.

    MODEL_DIR/<kind>/versions/<name>/...   one directory per version (shift block or decoder)
    MODEL_DIR/<kind>/LIVE                  the live version's name (replaced atomically)
    MODEL_DIR/<kind>/history.jsonl         promotions, rollbacks and refusals, with reasons

Writers build a version in a temporary directory and rename it into place, so a crashed
training run leaves no half-written version and never touches LIVE.  Readers (workers) poll
``live_stamp()``: one stat() call, cheap enough to do before every job.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from rpsam2_backend.core.names import LIVE_FILE, live_version

KINDS = ("shift", "decoder")


class CheckpointStore:
    def __init__(self, model_dir: str | Path, kind: str = "shift") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown checkpoint kind {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self.root = Path(model_dir) / kind
        self.versions_dir = self.root / "versions"
        self.live_file = self.root / LIVE_FILE
        self.history_file = self.root / "history.jsonl"

    # --- reading ---------------------------------------------------------------------------
    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def path(self, name: str) -> Path:
        path = self.versions_dir / name
        if not path.is_dir():
            raise FileNotFoundError(f"no {self.kind} version {name!r} under {self.versions_dir}")
        return path

    def live(self) -> str | None:
        return live_version(self.root.parent, self.kind)

    def live_path(self) -> Path | None:
        name = self.live()
        return self.path(name) if name else None

    def live_stamp(self) -> tuple[str | None, float]:
        """(live name, mtime): changes whenever a promotion or rollback happens."""
        try:
            return self.live(), self.live_file.stat().st_mtime
        except FileNotFoundError:
            return None, 0.0

    def metadata(self, name: str) -> dict:
        meta_file = self.path(name) / "version.json"
        return json.loads(meta_file.read_text()) if meta_file.is_file() else {}

    def history(self) -> list[dict]:
        if not self.history_file.is_file():
            return []
        return [json.loads(line) for line in self.history_file.read_text().splitlines() if line.strip()]

    # --- writing ---------------------------------------------------------------------------
    def next_name(self) -> str:
        numbers = [int(n[1:]) for n in self.versions() if n[:1] == "v" and n[1:].isdigit()]
        return f"v{(max(numbers) if numbers else 0) + 1:04d}"

    def add(self, source_dir: str | Path, metadata: dict | None = None) -> str:
        """Copy a finished checkpoint directory in as a new version (never live by itself)."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.versions_dir))
        try:
            shutil.copytree(source_dir, tmp, dirs_exist_ok=True)
            meta = {"created_at": time.time(), **(metadata or {})}
            (tmp / "version.json").write_text(json.dumps(meta, indent=2, default=str))
            while True:  # two trainers may race for a name: rename is atomic, retry on clash
                name = self.next_name()
                try:
                    tmp.rename(self.versions_dir / name)
                    return name
                except OSError:
                    if not (self.versions_dir / name).exists():
                        raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def promote(self, name: str, reason: str = "") -> None:
        self.path(name)  # must exist
        previous = self.live()
        self._write_live(name)
        self._record({"event": "promote", "version": name, "previous": previous, "reason": reason})

    def refuse(self, name: str, reason: str) -> None:
        self._record({"event": "refuse", "version": name, "live": self.live(), "reason": reason})

    def rollback(self, reason: str = "manual rollback") -> str | None:
        """Make the version that was live before the current one live again (None = plain SAM2)."""
        current = self.live()
        if current is None:
            raise ValueError(f"nothing to roll back: no live {self.kind} version")
        # Replay history as a stack: a promotion pushes, a rollback pops.
        stack: list[str] = []
        for entry in self.history():
            if entry["event"] == "promote":
                stack.append(entry["version"])
            elif entry["event"] == "rollback" and stack:
                stack.pop()
        if stack and stack[-1] == current:
            stack.pop()
        previous = stack[-1] if stack else None
        if previous is None:
            self.live_file.unlink(missing_ok=True)
        else:
            self._write_live(previous)
        self._record({"event": "rollback", "version": previous, "previous": current, "reason": reason})
        return previous

    def _write_live(self, name: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".LIVE.{os.getpid()}"
        tmp.write_text(name + "\n")
        os.replace(tmp, self.live_file)

    def _record(self, entry: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        entry = {"time": time.time(), **entry}
        with open(self.history_file, "a") as f:
            f.write(json.dumps(entry) + "\n")
