"""What both studies read from an evaluation: a method's "Avg." / "W. Avg." cells of Table 1."""

from __future__ import annotations

from typing import Any

from trainer.eval.protocol import AVG_ROW, WEIGHTED_AVG_ROW, Table


def method_summary(table: Table, method: str) -> dict[str, Any]:
    """mDSC (%) and mHD95 of ``method``: "Avg." (the headline: the mean over instrument classes, as the
    paper's Avg. row and Fig. 4) and "W. Avg."; ± is the paper's statistic (mean of the class stds)."""
    out: dict[str, Any] = {}
    for row, prefix in ((AVG_ROW, ""), (WEIGHTED_AVG_ROW, "w_")):
        dice, hd = table.cell(method, row, "dice"), table.cell(method, row, "hd95")
        out.update({f"{prefix}mdsc": 100 * dice.mean, f"{prefix}mdsc_std": 100 * dice.std,
                    f"{prefix}mhd95": hd.mean, f"{prefix}mhd95_std": hd.std})
    return out


def pm(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.2f}±{std:.2f}"
