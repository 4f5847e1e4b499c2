"""The training curve (``curve.png``): loss terms per step and validation mDSC per validation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _binned(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of (x, y) in ``bins`` consecutive chunks: a readable curve of 10^5 noisy steps."""
    if len(x) <= bins:
        return x, y
    chunks = np.array_split(np.arange(len(x)), bins)
    return np.array([x[c].mean() for c in chunks]), np.array([np.nanmean(y[c]) for c in chunks])


def plot_curves(
    steps: Sequence[dict[str, float]], history: Sequence[dict[str, Any]], path: Path, baseline: float | None
) -> Path:
    """Loss terms per step (left axis) and validation mDSC per validation (right panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.array([r["step"] for r in steps], dtype=float)
    for key, label in (("loss", "total"), ("dice", "Dice"), ("distance", "distance"), ("outside", "outside")):
        bx, by = _binned(x, np.array([r[key] for r in steps], dtype=float), 2000)
        ax_loss.plot(bx, by, label=label, linewidth=1)
    if len(x):
        ax_loss.set_yscale("symlog", linthresh=1.0)  # the exponential distance term spans decades
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    ax_loss.legend()
    val = [(h["step"], h["val_mdsc"]) for h in history if h.get("val_mdsc") is not None]
    if val:
        ax_val.plot([s for s, _ in val], [v for _, v in val], marker="o", label="RP-SAM2")
        if baseline is not None:
            ax_val.axhline(baseline, color="gray", linestyle="--", label="SAM2")
        ax_val.legend()
    else:
        ax_val.text(0.5, 0.5, "no validation data", ha="center", va="center", transform=ax_val.transAxes)
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("mDSC")
    ax_val.set_title("validation mDSC")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
