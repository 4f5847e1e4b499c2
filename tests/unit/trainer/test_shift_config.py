"""``TrainConfig``: validation of its values and the JSON round trip."""

from __future__ import annotations

import json

import pytest

from rpsam2_backend.engine.modeling.shift_block import ShiftBlockConfig
from trainer.shift.candidates import GridSpec
from trainer.shift.config import TrainConfig


def test_train_config_validation_and_round_trip():
    config = TrainConfig(steps=10, grid=GridSpec(target_points=9), shift=ShiftBlockConfig(layers=3))
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for bad in ({"batch_size": 0}, {"points_per_object": 0}, {"steps": 0}, {"lr": 0.0}, {"val_seeds": -1},
                {"train_clicks": "anywhere"}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
