"""Heatmap drawing: every mask pixel takes the value of its nearest grid point."""

from __future__ import annotations

import numpy as np

from trainer.eval.heatmaps import fill_from_grid


def test_heatmap_fill_takes_the_nearest_grid_value():
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:8, 2:18] = True
    grid = np.array([[4.5, 5.5], [15.5, 5.5]])  # (x, y) pixel centres
    filled = fill_from_grid(mask, grid, np.array([0.2, 0.9]))
    assert np.isnan(filled[0, 0]) and np.isnan(filled[9, 19])
    assert filled[5, 3] == 0.2 and filled[3, 8] == 0.2
    assert filled[5, 16] == 0.9 and filled[7, 12] == 0.9
