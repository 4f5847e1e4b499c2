"""Settings: parsed by type from the environment, bounds honoured, messages name the variable."""

from __future__ import annotations

import numpy as np
import pytest


def test_settings_without_checkpoint_fail_with_download_command():
    from rpsam2_backend.core.errors import ConfigError
    from rpsam2_backend.core.settings import Settings

    with pytest.raises(ConfigError) as err:
        Settings.from_env({"RPSAM2_CHECKPOINT_DIR": "/nonexistent"}).resolved_checkpoint()
    assert "RPSAM2_SAM2_CHECKPOINT" in err.value.message and "make checkpoints" in err.value.message
    with pytest.raises(ConfigError, match="RPSAM2_CACHE_MB"):
        Settings.from_env({"RPSAM2_CACHE_MB": "lots"})
    with pytest.raises(ConfigError, match="RPSAM2_ALLOW_RANDOM_WEIGHTS"):
        Settings.from_env({"RPSAM2_ALLOW_RANDOM_WEIGHTS": "maybe"})
    assert np.isclose(Settings.from_env({"RPSAM2_PREDICT_TIMEOUT": "2.5"}).queue.predict_timeout, 2.5)


def test_values_are_parsed_by_the_fields_real_types():
    from rpsam2_backend.core.settings import Settings

    s = Settings.from_env({"RPSAM2_JOB_TIMEOUT": "7", "RPSAM2_RETRAIN_MIN_GAIN": "-0.25",
                           "RPSAM2_ALLOW_RANDOM_WEIGHTS": "yes", "REDIS_URL": "  redis://h/0 "})
    assert type(s.queue.job_timeout) is int and s.queue.job_timeout == 7
    assert type(s.learning.retrain_min_gain) is float and s.learning.retrain_min_gain == -0.25
    assert s.model.allow_random_weights is True
    assert s.queue.redis_url == "redis://h/0" and not s.inline


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("RPSAM2_JOB_TIMEOUT", "2.5", "is not an integer"),
        ("RPSAM2_JOB_TIMEOUT", "0", "must be >= 1"),  # min of the field, not the generic 0
        ("RPSAM2_RESULT_TTL", "0", "must be >= 1"),
        ("RPSAM2_RETRAIN_MIN_GAIN", "-2", "must be >= -1"),
        ("RPSAM2_RETRAIN_MIN_GAIN", "1.5", "must be <= 1"),
        ("RPSAM2_RETRAIN_VAL_FRACTION", "0.95", "must be <= 0.9"),
        ("RPSAM2_PREDICT_TIMEOUT", "nan", "is not a number"),
        ("RPSAM2_CACHE_MB", "-1", "must be >= 0"),
    ],
)
def test_bounds_are_honoured_and_the_message_names_the_variable(name, raw, message):
    from rpsam2_backend.core.errors import ConfigError
    from rpsam2_backend.core.settings import Settings

    with pytest.raises(ConfigError) as err:
        Settings.from_env({name: raw})
    assert err.value.message.startswith(f"{name}={raw!r}") and message in err.value.message


def test_sections_keep_the_flat_environment_names_and_with_changes_one_section():
    from rpsam2_backend.core.settings import Settings

    names = Settings.env_names()
    assert names["REDIS_URL"] == ("queue", "redis_url")
    assert names["LABEL_STUDIO_URL"] == ("label_studio", "url")
    assert len(names) == len(set(names.values()))  # one variable per field and back
    base = Settings.from_env({"LABEL_STUDIO_HOST": "http://ls:8080", "RPSAM2_CLICK_QUEUE": "c"})
    assert base.label_studio.url == "http://ls:8080"  # the alias Label Studio's own docs use
    changed = base.with_("queue", predict_timeout=3.0)
    assert changed.queue.predict_timeout == 3.0 and changed.queue.click_queue == "c"
    assert base.queue.predict_timeout == 10.0 and changed.label_studio == base.label_studio


def test_public_masks_secrets_only():
    from rpsam2_backend.core.settings import Settings

    env = {"LABEL_STUDIO_API_KEY": "tok", "BASIC_AUTH_PASS": "pw", "BASIC_AUTH_USER": "u"}
    public = Settings.from_env(env).public()
    assert public["label_studio"]["api_key"] == "***" and public["web"]["basic_auth_pass"] == "***"
    assert public["web"]["basic_auth_user"] == "u" and public["label_studio"]["url"] == ""
