"""The training curve: long step logs are binned into readable means; the PNG is written with or without validation."""

from __future__ import annotations

import numpy as np

from trainer.io.plots import _binned, plot_curves


def test_binned_means_of_consecutive_chunks():
    x = np.arange(10, dtype=float)
    y = np.array([1, 1, 1, 1, np.nan, 3, 3, 3, 3, 3], dtype=float)
    bx, by = _binned(x, y, 2)
    np.testing.assert_allclose(bx, [2.0, 7.0])
    np.testing.assert_allclose(by, [1.0, 3.0])  # NaN cells do not poison a chunk
    same_x, same_y = _binned(x, y, 20)  # fewer points than bins: unchanged
    assert same_x is x and same_y is y


def test_plot_curves_writes_a_png(tmp_path):
    steps = [{"step": s, "loss": 1.0 / s, "dice": 0.5, "distance": 0.1, "outside": 0.0} for s in range(1, 6)]
    history = [{"step": 5, "val_mdsc": 0.7}]
    for name, hist, baseline in (("val.png", history, 0.6), ("none.png", [], None)):
        path = plot_curves(steps, hist, tmp_path / name, baseline)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
