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


def plot_over_x(
    path: Path,
    x: Sequence[float],
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """Fig. 4(a)'s layout: one line per method over ``x`` with its ± band shaded; NaN points are gaps."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in threads and tests

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    xs = np.asarray(x, dtype=float)
    for label, (mean, std) in series.items():
        m, s = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        ax.plot(xs, m, marker="o", label=label)
        ax.fill_between(xs, m - s, m + s, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_groups(
    path: Path,
    groups: Sequence[tuple[str, Sequence[tuple[str, float, float]]]],
    ylabel: str,
    title: str,
    baseline: tuple[str, float, float] | None = None,
) -> Path:
    """Fig. 4(b)'s layout: one panel per group, a bar with an error bar (±) per variant, the baseline as a
    dashed line with its band."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * max(1, len(groups)) + 0.6, 3.8), layout="constrained")
    axes = fig.subplots(1, max(1, len(groups)), squeeze=False)[0]
    for ax, (group, bars) in zip(axes, groups, strict=False):
        labels = [b[0] for b in bars]
        means = np.array([b[1] for b in bars], dtype=float)
        stds = np.array([b[2] for b in bars], dtype=float)
        ax.bar(range(len(bars)), means, yerr=stds, capsize=4, color="tab:red", alpha=0.75)
        ax.set_xticks(range(len(bars)))
        ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
        if baseline is not None:
            name, m, s = baseline
            ax.axhline(m, color="gray", linestyle="--", label=name)
            ax.axhspan(m - s, m + s, color="gray", alpha=0.15)
            ax.legend(fontsize=8)
        ax.set_title(group, fontsize=9)
        ax.set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
