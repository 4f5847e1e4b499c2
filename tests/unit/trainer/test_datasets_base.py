"""``Dataset``: unknown splits and duplicate sample ids are refused."""

from __future__ import annotations

import pytest

from trainer.datasets import Dataset, Sample


def test_dataset_unknown_split_and_duplicate_ids():
    data = Dataset([Sample("a.png", [])], name="x", splits={"train": ["a.png"]})
    with pytest.raises(KeyError, match="train"):
        data.split("val")
    with pytest.raises(ValueError, match="duplicate"):
        Dataset([Sample("a.png", []), Sample("a.png", [])])
