"""Evaluation protocol of the paper (§3.3, Table 1): aggregation, significance, table layout.

Protocol: for each seed (one "prompt"), one random point inside each object's ground truth
(``trainer.prompts.points_for_protocol``). The same seed gives the same point to every method. Scores
are aggregated *per seed first*: for every seed the mean over the samples (objects) is taken, then mean
and standard deviation across the seeds. The std therefore measures stability across prompts, not the
spread between objects.

Summary rows, as the paper computes them (its Table 1 checks out this way to the last digit: the
SAM2 / RP-SAM2 Dice stds of the ten classes average to 3.40 / 2.09, the HD95 stds to 20.42 / 8.66):

- "Avg.": mean = plain mean of the class means; ± = plain mean of the class stds;
- "W. Avg.": mean = object-count-weighted mean of the class means; ± = object-count-weighted mean of
  the class stds.

The std across seeds of the per-seed summary value (what this module reported before; smaller,
because classes' seed-to-seed fluctuations partly cancel) is kept as ``Cell.std_of_mean``.

Standard deviations are population std (``ddof=0``, numpy's default) across seeds -- the paper does not
say which it used; ``STD_DDOF`` is the single place this is decided.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from trainer.prompts import stable_hash

STD_DDOF = 0
AVG_ROW = "Avg."
WEIGHTED_AVG_ROW = "W. Avg."
METRICS = ("dice", "hd95")
# metric key -> (column label as in Table 1, show as percent)
METRIC_LABELS: dict[str, tuple[str, bool]] = {
    "dice": ("mDSC(%)↑", True),
    "hd95": ("mHD95↓", False),
}
WILCOXON = "Wilcoxon signed-rank"
PAIRED_T = "paired t-test"
# What one pair of a paired test is: the headline test pairs per-object means over the seeds; the
# second line pairs every (seed, object) -- more pairs than independent units, so anti-conservative.
PAIRING_OBJECT_MEANS = "per-object means over seeds"
PAIRING_SEED_OBJECT = "per (seed, object)"


# ------------------------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class ObjectScore:
    """Score of one method on one object for one seed (prompt)."""

    method: str
    seed: int
    object_id: Hashable
    class_name: str
    dice: float
    hd95: float


@dataclass(frozen=True)
class Cell:
    """Mean and std of a table cell, with its per-seed values (kept for re-aggregation and plots).

    Class rows: mean and std across seeds of the per-seed class means.  Summary rows: ``std`` is the
    paper's ± (mean, or count-weighted mean, of the class stds) and ``std_of_mean`` the std across
    seeds of the per-seed summary values; for class rows the two are the same number.
    """

    mean: float
    std: float
    per_seed: dict[int, float]
    std_of_mean: float = math.nan


@dataclass
class Table:
    """Aggregated results: ``cells[(method, row, metric)]``; rows are the classes, then Avg. and W. Avg."""

    methods: list[str]
    rows: list[str]
    metrics: tuple[str, ...] = METRICS
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    n_objects: dict[str, int] = field(default_factory=dict)  # class -> objects per seed
    n_seeds: int = 0

    def cell(self, method: str, row: str, metric: str) -> Cell:
        return self.cells[(method, row, metric)]

    def to_records(self) -> list[dict[str, Any]]:
        """Flat rows (method, row, metric, mean, std, n_seeds) for CSV/JSON."""
        return [
            {
                "method": method,
                "row": row,
                "metric": metric,
                "mean": self.cells[(method, row, metric)].mean,
                "std": self.cells[(method, row, metric)].std,
                "std_of_mean": self.cells[(method, row, metric)].std_of_mean,
                "n_seeds": self.n_seeds,
            }
            for method in self.methods
            for row in self.rows
            for metric in self.metrics
        ]


def _mean_std(per_seed: dict[int, float]) -> Cell:
    values = np.array(list(per_seed.values()), dtype=np.float64)
    std = float(values.std(ddof=STD_DDOF))
    return Cell(float(values.mean()), std, dict(per_seed), std)


def summary_cell(class_cells: Sequence[Cell], weights: Sequence[float] | None, per_seed: dict[int, float]) -> Cell:
    """The "Avg." (``weights`` None) or "W. Avg." (``weights`` = objects per class) cell as the paper
    computes it: the (weighted) mean of the class means and of the class stds.  ``per_seed`` are the
    per-seed summary values; their mean equals the cell's mean, their std becomes ``std_of_mean``."""
    if not class_cells:
        raise ValueError("a summary row needs at least one class")
    w = np.ones(len(class_cells)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(class_cells),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need one non-negative weight per class (not all zero), got {weights!r}")
    means = np.array([c.mean for c in class_cells], dtype=np.float64)
    stds = np.array([c.std for c in class_cells], dtype=np.float64)
    values = np.array(list(per_seed.values()), dtype=np.float64)
    return Cell(float(np.average(means, weights=w)), float(np.average(stds, weights=w)), dict(per_seed),
                float(values.std(ddof=STD_DDOF)) if values.size else math.nan)


def _validate(scores: Sequence[ObjectScore]) -> None:
    if not scores:
        raise ValueError("no scores to aggregate")
    seen: set[tuple[str, int, Hashable]] = set()
    class_of: dict[Hashable, str] = {}
    objects_per_seed: dict[str, dict[int, set[Hashable]]] = defaultdict(lambda: defaultdict(set))
    for s in scores:
        key = (s.method, s.seed, s.object_id)
        if key in seen:
            raise ValueError(f"duplicate score for method/seed/object {key}")
        seen.add(key)
        if class_of.setdefault(s.object_id, s.class_name) != s.class_name:
            raise ValueError(
                f"object {s.object_id!r} has two classes: {class_of[s.object_id]!r}, {s.class_name!r}"
            )
        if not (math.isfinite(s.dice) and math.isfinite(s.hd95)):
            raise ValueError(f"non-finite score {s}; apply the empty-mask policy before aggregating")
        objects_per_seed[s.method][s.seed].add(s.object_id)
    # Per-seed means are only comparable across seeds when every seed scores the same objects.
    for method, by_seed in objects_per_seed.items():
        sets = list(by_seed.values())
        if any(objs != sets[0] for objs in sets[1:]):
            raise ValueError(f"method {method!r}: seeds cover different objects")


def aggregate(scores: Sequence[ObjectScore], class_order: Sequence[str] | None = None) -> Table:
    """Table-1 aggregation, per seed first.

    For each method and class: per seed the mean over that class's objects, then mean and std across seeds.
    "Avg.": plain mean of the class means and of the class stds (``summary_cell``); its per-seed values are
    the plain means of the per-seed class means.
    "W. Avg.": the same weighted by the number of objects per class; its per-seed values are the means over
    all objects.
    Methods keep their first-appearance order; classes follow ``class_order`` or first appearance.
    """
    scores = list(scores)
    _validate(scores)
    methods = list(dict.fromkeys(s.method for s in scores))
    classes = list(dict.fromkeys(s.class_name for s in scores))
    if class_order is not None:
        missing = set(classes) - set(class_order)
        if missing:
            raise ValueError(f"class_order lacks classes {sorted(missing)}")
        classes = [c for c in class_order if c in set(classes)]

    # values[(method, seed, class, metric)] -> list of per-object values
    values: dict[tuple[str, int, str, str], list[float]] = defaultdict(list)
    for s in scores:
        for metric in METRICS:
            values[(s.method, s.seed, s.class_name, metric)].append(float(getattr(s, metric)))

    table = Table(methods=methods, rows=[*classes, AVG_ROW, WEIGHTED_AVG_ROW])
    all_seeds: set[int] = set()
    for method in methods:
        seeds = sorted({s.seed for s in scores if s.method == method})
        all_seeds.update(seeds)
        for metric in METRICS:
            class_means: dict[str, dict[int, float]] = {c: {} for c in classes}
            plain: dict[int, float] = {}
            weighted: dict[int, float] = {}
            for seed in seeds:
                pooled: list[float] = []
                for c in classes:
                    vals = values.get((method, seed, c, metric), [])
                    if not vals:
                        raise ValueError(f"method {method!r} has no {c!r} objects for seed {seed}")
                    class_means[c][seed] = float(np.mean(vals))
                    pooled.extend(vals)
                plain[seed] = float(np.mean([class_means[c][seed] for c in classes]))
                weighted[seed] = float(np.mean(pooled))
            for c in classes:
                table.cells[(method, c, metric)] = _mean_std(class_means[c])
            class_cells = [table.cells[(method, c, metric)] for c in classes]
            counts = [len(values[(method, seeds[0], c, metric)]) for c in classes]
            table.cells[(method, AVG_ROW, metric)] = summary_cell(class_cells, None, plain)
            table.cells[(method, WEIGHTED_AVG_ROW, metric)] = summary_cell(class_cells, counts, weighted)
    table.n_seeds = len(all_seeds)
    first = methods[0]
    first_seed = min(s.seed for s in scores if s.method == first)
    for c in classes:
        table.n_objects[c] = len(values[(first, first_seed, c, METRICS[0])])
    return table


def pair_scores(
    scores: Sequence[ObjectScore], method_a: str, method_b: str, metric: str = "dice"
) -> tuple[list[float], list[float]]:
    """Align two methods' per-object-per-seed values on (seed, object_id) for ``paired_test``."""
    a = {(s.seed, s.object_id): float(getattr(s, metric)) for s in scores if s.method == method_a}
    b = {(s.seed, s.object_id): float(getattr(s, metric)) for s in scores if s.method == method_b}
    if set(a) != set(b):
        raise ValueError(f"{method_a!r} and {method_b!r} were scored on different (seed, object) pairs")
    keys = sorted(a, key=lambda k: (k[0], stable_hash(k[1])))
    return [a[k] for k in keys], [b[k] for k in keys]


def pair_object_means(
    scores: Sequence[ObjectScore], method_a: str, method_b: str, metric: str = "dice"
) -> tuple[list[float], list[float]]:
    """Per object, each method's mean over the seeds: the independent units of the headline test.

    The 10 prompts of one object are not independent samples (same image, same shape), so testing
    every (seed, object) pair as if it were overstates n and gives anti-conservative p-values."""
    pair_scores(scores, method_a, method_b, metric)  # raises when the (seed, object) pairs differ
    per_object: dict[str, dict[Hashable, list[float]]] = {method_a: defaultdict(list), method_b: defaultdict(list)}
    for s in scores:
        if s.method in per_object:
            per_object[s.method][s.object_id].append(float(getattr(s, metric)))
    keys = sorted(per_object[method_a], key=stable_hash)
    return ([float(np.mean(per_object[method_a][k])) for k in keys],
            [float(np.mean(per_object[method_b][k])) for k in keys])


# ------------------------------------------------------------------------------------------ significance


def paired_test(dice_a: Sequence[float], dice_b: Sequence[float], test: str = WILCOXON) -> dict[str, Any]:
    """Paired significance test on per-object-per-seed scores of two methods (same objects, same points).

    ``test`` is "Wilcoxon signed-rank" (default; zero differences discarded, scipy's "wilcox") or
    "paired t-test". When every difference is zero scipy raises or returns NaN; we report p_value 1.0
    with note "no difference" instead.
    """
    a = np.asarray(dice_a, dtype=np.float64)
    b = np.asarray(dice_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired inputs must be 1-D and of equal length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired test needs at least one pair")
    if test not in (WILCOXON, PAIRED_T):
        raise ValueError(f"unknown test {test!r}; use {WILCOXON!r} or {PAIRED_T!r}")
    result: dict[str, Any] = {"test": test, "n": int(a.size), "statistic": None, "p_value": 1.0, "note": ""}
    diff = a - b
    if np.all(diff == 0):
        result["note"] = "no difference"
        return result
    if test == WILCOXON:
        res = stats.wilcoxon(a, b, zero_method="wilcox")
    else:
        res = stats.ttest_rel(a, b)
    result["statistic"] = float(res.statistic)
    result["p_value"] = float(res.pvalue)
    return result


# ------------------------------------------------------------------------------------------- formatting


def format_mean_std(mean: float, std: float, percent: bool = False) -> str:
    """``80.17±3.05``: two decimals; ``percent`` multiplies both by 100 (Dice in Table 1)."""
    scale = 100.0 if percent else 1.0
    return f"{mean * scale:.2f}±{std * scale:.2f}"


def markdown_table(table: Table, metric_names: Sequence[str] = METRICS) -> str:
    """Table-1 layout: a row per class, then Avg. and W. Avg.; per method one column per metric."""
    for metric in metric_names:
        if metric not in METRIC_LABELS or metric not in table.metrics:
            raise ValueError(f"unknown metric {metric!r}")
    header = ["Classes"] + [f"{m} {METRIC_LABELS[k][0]}" for m in table.methods for k in metric_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in table.rows:
        cells = [row]
        for method in table.methods:
            for metric in metric_names:
                cell = table.cells[(method, row, metric)]
                cells.append(format_mean_std(cell.mean, cell.std, percent=METRIC_LABELS[metric][1]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
