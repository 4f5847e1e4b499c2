"""CSV logs of a training run (``metrics.csv`` rewritten per validation, ``steps.csv`` appended per step).

Empty cells stand for None on writing and come back as NaN on reading (every column is numeric).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.io.atomic import atomic_text_file


def _cells(row: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {k: ("" if row.get(k) is None else row.get(k)) for k in fields}


def write_csv(path: Path, fields: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Replace ``path`` with a header and ``rows`` (keys outside ``fields`` are dropped)."""
    with atomic_text_file(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(_cells(row, fields))


def append_csv(path: Path, fields: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Append ``rows`` without a header: a log of 10^5 steps is not rewritten at every validation."""
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        for row in rows:
            writer.writerow(_cells(row, fields))


def read_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a numeric CSV we wrote (steps.csv), as floats; [] when the file does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                for row in csv.DictReader(f)]
