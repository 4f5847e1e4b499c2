"""``load_dataset``: an unknown format names the known ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.datasets import FORMATS, load_dataset


def test_unknown_format_lists_formats(tmp_path: Path):
    with pytest.raises(ValueError) as err:
        load_dataset(tmp_path, "coco")
    for fmt in FORMATS:
        assert fmt in str(err.value)
