"""What ``trainer.eval.run.evaluate`` writes to its output folder.

- ``scores.csv``: one row per table, method, seed and object (Dice, HD95, the prompt points, the
  point the decoder saw); re-aggregating it with ``trainer.eval.protocol.aggregate`` gives the tables.
- ``summary.json``: the run's settings, every table cell (mean, std, per-seed values), the paired
  tests, excluded objects, empty-prediction counts and heatmap files.
- ``report.md``: the same as Markdown in the paper's layout (``mean±std``; Dice in percent).
- ``heatmaps/*.png``: written by ``trainer.eval.heatmaps``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.eval.protocol import METRIC_LABELS, STD_DDOF, Table, format_mean_std, markdown_table
from trainer.eval.results import EvaluationResult, ScoreRow
from trainer.scores import EMPTY_HD95_POLICY

if TYPE_CHECKING:  # only for annotations: reading a scores.csv should not need torch
    from trainer.eval.methods import MethodSpec

CSV_FIELDS = (
    "table", "n_points", "method", "seed", "sample_id", "object_id", "class_name", "dice", "hd95",
    "empty_pred", "first_inside_gt", "points", "first_used",
)

PROTOCOL_TEXT = (
    "For every seed (one prompt), each object gets random positive point(s) drawn uniformly from its "
    "ground-truth pixels (pixel centres); every method gets the same points. One point is decoded with "
    "SAM's multimask output (the mask with the best predicted IoU is kept), several points with a single "
    "mask. RP-SAM2 moves the first point with its shift block; later points pass unchanged. Per seed the "
    "scores are averaged over the objects of a class (class rows), over the class means (Avg.) and over "
    "all objects (W. Avg., classes weighted by their number of objects). A class cell shows the mean ± std of "
    "its per-seed values across seeds (std with ddof={ddof}), i.e. the stability across prompts. As in the "
    "paper, the Avg. row's ± is the plain mean of the class stds and the W. Avg. row's ± their mean weighted "
    "by objects per class (summary.json keeps the std across seeds of the per-seed Avg./W. Avg. values as "
    "std_of_mean). Dice is in percent; HD95 in pixels (symmetric, 95th percentile of the pooled surface "
    "distances). Paired tests: the headline p-value pairs each object's mean over the seeds between two "
    "methods (one pair per object); the second line pairs every (seed, object) and overstates the number "
    "of independent samples (anti-conservative)."
)


# ------------------------------------------------------------------------------------------ CSV


def _row_dict(row: ScoreRow) -> dict[str, Any]:
    return {
        "table": row.table, "n_points": row.n_points, "method": row.method, "seed": row.seed,
        "sample_id": row.sample_id, "object_id": row.object_id, "class_name": row.class_name,
        # repr round-trips floats exactly, so the CSV re-aggregates to the very same tables
        "dice": repr(float(row.dice)), "hd95": repr(float(row.hd95)),
        "empty_pred": int(row.empty_pred), "first_inside_gt": int(row.first_inside_gt),
        "points": json.dumps(row.points), "first_used": json.dumps(row.first_used),
    }


def write_scores_csv(path: Path, rows: Sequence[ScoreRow]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(_row_dict(r) for r in rows)
    return path


def read_scores_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``scores.csv`` with numbers and point lists decoded."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["n_points"], r["seed"] = int(r["n_points"]), int(r["seed"])
        r["dice"], r["hd95"] = float(r["dice"]), float(r["hd95"])
        r["empty_pred"], r["first_inside_gt"] = r["empty_pred"] == "1", r["first_inside_gt"] == "1"
        r["points"], r["first_used"] = json.loads(r["points"]), json.loads(r["first_used"])
    return rows


# ------------------------------------------------------------------------------------------ JSON


def table_json(table: Table) -> dict[str, Any]:
    cells = [
        {"method": m, "row": row, "metric": k, "mean": c.mean, "std": c.std, "std_of_mean": _finite(c.std_of_mean),
         "per_seed": {str(s): v for s, v in sorted(c.per_seed.items())}}
        for (m, row, k), c in table.cells.items()
    ]
    return {"methods": table.methods, "rows": table.rows, "n_seeds": table.n_seeds,
            "objects_per_class": table.n_objects, "cells": cells}


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf; the paired tests never produce them, but keep the file valid regardless."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def outcome_counts(rows: Sequence[ScoreRow]) -> dict[str, dict[str, dict[str, int]]]:
    """table -> method -> {predictions, empty, first point off the object}."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for r in rows:
        c = counts.setdefault(r.table, {}).setdefault(r.method, {"predictions": 0, "empty": 0, "first_outside": 0})
        c["predictions"] += 1
        c["empty"] += int(r.empty_pred)
        c["first_outside"] += int(not r.first_inside_gt)
    return counts


def summary_json(result: EvaluationResult) -> dict[str, Any]:
    return {
        "info": result.info,
        "protocol": PROTOCOL_TEXT.format(ddof=STD_DDOF),
        "hd95_empty_policy": EMPTY_HD95_POLICY,
        "std_ddof": STD_DDOF,
        "tables": {
            spec.key: {"title": spec.title, "n_points": spec.n_points, **table_json(result.tables[spec.key])}
            for spec in result.table_specs
        },
        "paired_tests": {k: [{f: _finite(v) for f, v in t.items()} for t in tests]
                         for k, tests in result.paired.items()},
        "outcomes": outcome_counts(result.rows),
        "excluded_objects": result.excluded,
        "heatmaps": [
            {"object": h.key, "class_name": h.class_name, "png": str(Path(h.png).relative_to(result.out_dir)),
             "grid_points": int(len(h.grid)),
             "mean_dice": {m: float(d.mean()) for m, d in h.dice.items()},
             "grid": h.grid.tolist(), "dice": {m: d.tolist() for m, d in h.dice.items()}}
            for h in result.heatmaps
        ],
    }


# ------------------------------------------------------------------------------------------ Markdown


def _relabelled(table: Table, labels: Mapping[str, str]) -> Table:
    """The same table with display names as method names (``markdown_table`` prints them)."""
    out = Table(methods=[labels[m] for m in table.methods], rows=table.rows, metrics=table.metrics,
                n_objects=table.n_objects, n_seeds=table.n_seeds)
    out.cells = {(labels[m], row, k): c for (m, row, k), c in table.cells.items()}
    return out


def wide_table(columns: Sequence[tuple[str, Table, str]]) -> str:
    """Table-2 layout: column groups (label, table, method) side by side, two metrics each."""
    rows = list(dict.fromkeys(r for _, t, _ in columns for r in t.rows))
    header = ["Classes"] + [f"{label} {METRIC_LABELS[k][0]}" for label, _, _ in columns for k in ("dice", "hd95")]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in rows:
        cells = [row]
        for _, table, method in columns:
            for k in ("dice", "hd95"):
                cell = table.cells.get((method, row, k))
                cells.append("–" if cell is None else format_mean_std(cell.mean, cell.std, METRIC_LABELS[k][1]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def format_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "1" if p == 1.0 else f"{p:.3g}"


def paired_markdown(tests: Sequence[dict[str, Any]], labels: Mapping[str, str]) -> str:
    if not tests:
        return "_Only one method: no paired test._\n"
    lines = ["| comparison | metric | test | pairs of | pairs | mean difference | statistic | p-value | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in tests:
        scale = 100.0 if t["metric"] == "dice" else 1.0
        stat = "–" if t["statistic"] is None else f"{t['statistic']:.4g}"
        pairing = t.get("pairing", "")
        pairing = f"**{pairing}** (headline)" if t.get("headline") else pairing
        lines.append(
            f"| {labels[t['method']]} vs {labels[t['baseline']]} | {METRIC_LABELS[t['metric']][0]} | {t['test']} "
            f"| {pairing} | {t['n']} | {scale * t['mean_difference']:+.2f} | {stat} | {format_p(t['p_value'])} "
            f"| {t['note'] or ''} |"
        )
    return "\n".join(lines) + "\n"


def outcomes_markdown(counts: Mapping[str, Mapping[str, int]], labels: Mapping[str, str]) -> str:
    lines = ["| method | predictions | empty masks | first point off the object |", "|---|---|---|---|"]
    for method, c in counts.items():
        n = max(1, c["predictions"])
        lines.append(f"| {labels[method]} | {c['predictions']} | {c['empty']} ({100 * c['empty'] / n:.1f}%) "
                     f"| {c['first_outside']} ({100 * c['first_outside'] / n:.1f}%) |")
    return "\n".join(lines) + "\n"


def method_labels(methods: Mapping[str, MethodSpec]) -> dict[str, str]:
    """Display names, made unique (two RP-SAM2 checkpoints get their keys added)."""
    seen = [spec.label for spec in methods.values()]
    return {name: spec.label if seen.count(spec.label) == 1 else f"{spec.label} ({name})"
            for name, spec in methods.items()}


def report_markdown(result: EvaluationResult, methods: Mapping[str, MethodSpec]) -> str:
    info = result.info
    labels = method_labels(methods)
    counts = outcome_counts(result.rows)
    out = ["# RP-SAM2 evaluation\n"]
    if "RANDOM" in str(info.get("sam2_checkpoint", "")):
        out.append("> **SAM2 ran with random weights: these numbers are meaningless (smoke test).**\n")
    out.append("## Setup\n")
    setup = [
        ("Dataset", info.get("dataset")), ("Data path", info.get("data_path")), ("Format", info.get("format")),
        ("Split", info.get("split")), ("Images", info.get("samples")), ("Objects", info.get("objects")),
        ("Objects per class", ", ".join(f"{c}: {n}" for c, n in info.get("class_counts", {}).items())),
        ("Seeds", ", ".join(str(s) for s in info.get("seeds", []))),
        ("SAM2 config", info.get("sam2_config")), ("SAM2 checkpoint", info.get("sam2_checkpoint")),
        ("Device", info.get("device")), ("Encoder calls", info.get("encoder_calls")),
        ("Command", f"`{info['command']}`" if info.get("command") else None),
    ]
    out.append("| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in setup if v not in (None, "")))
    params = {name: (info.get("methods") or {}).get(name, {}).get("trainable_parameters") for name in methods}
    header = {name: f"{labels[name]} ({_millions(params[name])})" if params[name] else labels[name] for name in methods}
    out.append("\nMethods (trainable parameters: the shift block for RP-SAM2, the mask decoder for SAM2-FT, the "
               "whole model for SAM2 and for baseline models):\n")
    out += [f"- **{spec.label}** (`{name}`{', ' + _millions(params[name]) if params[name] else ''}): "
            f"{spec.describe()}\n" for name, spec in methods.items()]
    baseline_calls = info.get("baseline_encoder_calls") or {}
    if baseline_calls:
        out.append("\nBaseline models encode with their own encoders: "
                   + ", ".join(f"`{n}` {c} encoder calls" for n, c in baseline_calls.items()) + ".\n")
    out.append("\n## Protocol\n\n" + PROTOCOL_TEXT.format(ddof=STD_DDOF) + "\n\n" + EMPTY_HD95_POLICY + "\n")

    table1 = [s for s in result.table_specs if s.key == "table1"]
    table2 = [s for s in result.table_specs if s.key != "table1"]
    for spec in table1:
        table = result.tables[spec.key]
        out.append(f"\n## {spec.title}\n\nMean ± std across {table.n_seeds} seeds.\n\n")
        out.append(markdown_table(_relabelled(table, header)))
        out.append("\nPaired tests: the headline p-value (bold) pairs per-object means over the seeds; "
                   "the line below it pairs every (seed, object) (anti-conservative):\n\n")
        out.append(paired_markdown(result.paired[spec.key], labels))
        out.append("\nOutcomes:\n\n" + outcomes_markdown(counts.get(spec.key, {}), labels))
    if table2:
        out.append("\n## Table 2: multiple random positive points, no shift vs shift first\n\n")
        columns = [
            (f"{spec.n_points} pts {labels[m]} ({'shift first' if methods[m].shifts else 'no shift'})",
             result.tables[spec.key], m)
            for spec in table2 for m in methods
        ]
        out.append(wide_table(columns))
        for spec in table2:
            out.append(f"\nPaired tests, {spec.n_points} points:\n\n")
            out.append(paired_markdown(result.paired[spec.key], labels))
        out.append("\nOutcomes:\n\n")
        for spec in table2:
            out.append(f"{spec.n_points} points:\n\n" + outcomes_markdown(counts.get(spec.key, {}), labels) + "\n")
    skipped = {k: v for k, v in result.excluded.items() if v}
    if skipped:
        out.append("\n## Objects left out\n\nToo few pixels for the table's number of points:\n\n")
        out += [f"- {k}: {len(v)} ({', '.join(v[:5])}{', ...' if len(v) > 5 else ''})\n" for k, v in skipped.items()]
    if result.heatmaps:
        out.append("\n## Heatmaps (Fig. 1 (v) / Fig. 5 (v))\n\nDice of a single click at each grid point, "
                   "drawn over the object; blue = low, red = high.\n\n")
        for h in result.heatmaps:
            rel = Path(h.png).relative_to(result.out_dir).as_posix()
            means = ", ".join(f"{labels[m]} {100 * d.mean():.1f}%" for m, d in h.dice.items())
            out.append(f"### {h.class_name}: `{h.key}`\n\nMean grid Dice: {means}.\n\n![{h.key}]({rel})\n\n")
    return "".join(out)


def write_outputs(result: EvaluationResult, methods: Mapping[str, MethodSpec]) -> None:
    write_scores_csv(result.scores_path, result.rows)
    result.summary_path.write_text(json.dumps(summary_json(result), indent=1, ensure_ascii=False, default=str),
                                   encoding="utf-8")
    result.report_path.write_text(report_markdown(result, methods), encoding="utf-8")
