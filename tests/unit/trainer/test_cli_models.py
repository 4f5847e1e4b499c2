"""``rpsam2-models``: list, promote and roll back versions by hand."""

from __future__ import annotations

import pytest

from rpsam2_backend.engine.checkpoint_store import CheckpointStore
from trainer.cli import models as cli_models


def test_models_cli_lists_promotes_and_rolls_back(tmp_path, capsys):
    store = CheckpointStore(tmp_path, "shift")
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"x")
    first = store.add(src, {"metrics": {"candidate": {"mdsc": 0.5, "std": 0.1}}, "project": "3"})
    second = store.add(src, {})
    args = ["--model-dir", str(tmp_path)]
    assert cli_models.main(["promote", first, *args]) == 0
    assert cli_models.main(["promote", second, *args]) == 0
    assert cli_models.main(["list", *args]) == 0
    out = capsys.readouterr().out
    assert f"* {second}" in out and "mDSC 0.5000" in out
    assert cli_models.main(["rollback", *args]) == 0
    assert store.live() == first
    assert cli_models.main(["promote", "v9999", *args]) == 2
    assert "no shift version 'v9999'" in capsys.readouterr().err
    assert cli_models.main(["rollback", "--kind", "decoder", *args]) == 2
    with pytest.raises(SystemExit) as exc:
        cli_models.main(["explode", *args])
    assert exc.value.code == 2
