"""The training CSV logs: None is an empty cell and comes back as NaN; appending adds rows, not headers."""

from __future__ import annotations

import math

from trainer.io.csv_log import append_csv, read_csv, write_csv

FIELDS = ["step", "loss", "val"]


def test_write_append_read_round_trip(tmp_path):
    path = tmp_path / "steps.csv"
    assert read_csv(path) == []  # no file yet
    write_csv(path, FIELDS, [{"step": 1, "loss": 0.5, "val": None, "ignored": "x"}])
    append_csv(path, FIELDS, [{"step": 2, "loss": 0.25}, {"step": 3, "loss": 0.125, "val": 0.9}])
    assert path.read_text().splitlines() == ["step,loss,val", "1,0.5,", "2,0.25,", "3,0.125,0.9"]
    rows = read_csv(path)
    assert [r["step"] for r in rows] == [1.0, 2.0, 3.0]
    assert math.isnan(rows[0]["val"]) and rows[2]["val"] == 0.9


def test_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "metrics.csv"
    write_csv(path, FIELDS, [{"step": 1}, {"step": 2}])
    write_csv(path, FIELDS, [{"step": 7}])
    assert [r["step"] for r in read_csv(path)] == [7.0]
