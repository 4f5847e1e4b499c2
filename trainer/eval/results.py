"""What an evaluation produces: one ``ScoreRow`` per prediction, the tables, heatmaps and paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.eval.protocol import ObjectScore, Table

OBJECT_KEY_SEPARATOR = "::"


def object_key(sample_id: str, object_id: str) -> str:
    """Printable id of one object of the dataset (CSV, report, ``heatmaps=`` selection)."""
    return f"{sample_id}{OBJECT_KEY_SEPARATOR}{object_id}"


@dataclass(frozen=True)
class TableSpec:
    key: str
    n_points: int
    title: str


@dataclass
class ScoreRow:
    """One CSV row: a method's prediction for one object and seed in one table."""

    table: str
    n_points: int
    method: str
    seed: int
    sample_id: str
    object_id: str
    class_name: str
    dice: float
    hd95: float
    empty_pred: bool
    first_inside_gt: bool  # the (possibly shifted) first point lies on the object
    points: list[list[float]]  # the protocol's points, before any shift
    first_used: list[float]  # the first point the decoder saw

    def object_score(self) -> ObjectScore:
        return ObjectScore(self.method, self.seed, (self.sample_id, self.object_id), self.class_name,
                           self.dice, self.hd95)


@dataclass
class HeatmapResult:
    key: str
    class_name: str
    png: str
    grid: np.ndarray  # (K, 2) pixel-centre points (x, y)
    dice: dict[str, np.ndarray]  # method -> (K,) Dice of each grid point's prediction


@dataclass
class EvaluationResult:
    out_dir: Path
    tables: dict[str, Table]
    table_specs: list[TableSpec]
    rows: list[ScoreRow]
    paired: dict[str, list[dict[str, Any]]]
    heatmaps: list[HeatmapResult]
    excluded: dict[str, list[str]]  # table key -> object keys too small to prompt
    info: dict[str, Any]
    report_path: Path
    scores_path: Path
    summary_path: Path
