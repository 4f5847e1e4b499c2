"""The deployment files agree with the code: compose services, GPU reservation, settings, scripts.

Docker cannot run here, so docker-compose.yml is checked as data (PyYAML); deploy/stack.sh, the
Docker-free twin of the compose stack, is started for real in tests/integration/rq/test_stack_script.py.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

from rpsam2_backend.core.settings import Settings
from tests.support.paths import REPO_ROOT
from tests.support.rpsam2_stack import free_port

DEPLOY = REPO_ROOT / "deploy"
SETTINGS_ENV = list(Settings.env_names())


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _env_example_names() -> set[str]:
    # Listed settings may be commented out (showing the default); both count as listed.
    pattern = re.compile(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
    return set(pattern.findall((DEPLOY / ".env.example").read_text()))


def _readme_config_names() -> set[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def _console_scripts() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    entries = cfg["options.entry_points"]["console_scripts"]
    return {line.split("=")[0].strip() for line in entries.strip().splitlines()}


def test_every_setting_is_listed_in_env_example() -> None:
    missing = sorted(set(SETTINGS_ENV) - _env_example_names())
    assert not missing, f"deploy/.env.example lacks {missing}"


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    missing = sorted(set(SETTINGS_ENV) - _readme_config_names())
    assert not missing, f"README.md's configuration table lacks {missing}"


def test_env_example_values_parse_as_settings() -> None:
    values = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        match = re.match(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match and match.group(1) in SETTINGS_ENV:
            values[match.group(1)] = match.group(2)
    settings = Settings.from_env(values)  # raises ConfigError on a malformed default
    assert settings.model.cache_mb == Settings().model.cache_mb
    assert settings.queue.click_queue == Settings().queue.click_queue


def test_compose_has_the_services_with_health_checks() -> None:
    services = _compose()["services"]
    assert {"redis", "backend", "gpu-worker", "train-worker", "label-studio"} <= set(services)
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    assert services["label-studio"]["image"].startswith("heartexlabs/label-studio:")


def test_gpu_worker_reserves_an_nvidia_gpu() -> None:
    services = _compose()["services"]
    for name in ("gpu-worker", "train-worker"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["count"] == 1 and device["capabilities"] == ["gpu"]
    assert "deploy" not in services["backend"]  # the web process never needs the GPU


def test_compose_commands_use_existing_console_scripts_and_queues() -> None:
    services = _compose()["services"]
    scripts = _console_scripts() | {"label-studio-ml"}
    assert services["backend"]["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py"]
    for name in ("gpu-worker", "train-worker"):
        command = services[name]["command"]
        assert command[0] in scripts
    assert services["gpu-worker"]["command"][1:] == ["--queues", "click"]
    assert services["train-worker"]["command"][1:] == ["--queues", "train", "--scheduler"]
    # The worker CLI accepts them: parse with its own parser.
    from rpsam2_backend.queue.worker import _parse

    train = _parse(services["train-worker"]["command"][1:])
    assert train.queues == "train" and train.scheduler is True


def test_compose_volumes_hold_models_checkpoints_and_label_studio_data() -> None:
    compose = _compose()
    assert {"models", "checkpoints", "label-studio-data"} <= set(compose["volumes"])
    services = compose["services"]
    for name in ("backend", "gpu-worker", "train-worker"):
        env = services[name]["environment"]
        mounts = {m.split(":")[1]: m.split(":")[0] for m in services[name]["volumes"]}
        assert mounts[env["MODEL_DIR"]] == "models"
        assert mounts[env["RPSAM2_CHECKPOINT_DIR"]] == "checkpoints"
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["RPSAM2_UPLOAD_DIR"].startswith(next(k for k, v in mounts.items() if v == "label-studio-data"))
    assert any(m.startswith("label-studio-data:") for m in services["label-studio"]["volumes"])


def test_every_variable_compose_interpolates_is_in_env_example() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert referenced, "compose interpolates nothing?"
    missing = sorted(referenced - _env_example_names())
    assert not missing, f"docker-compose.yml uses {missing}, absent from deploy/.env.example"


def test_dockerfile_installs_with_make_venv_and_bakes_no_checkpoints_by_default() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^RUN make venv\b", text, re.MULTILINE)
    assert "ARG DOWNLOAD_CHECKPOINTS=0" in text and "deploy/download_checkpoints.sh" in text
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.MULTILINE)
    assert re.search(r"ARG BASE_IMAGE=nvidia/cuda:\S*cudnn", text)
    # The Makefile's venv recipe builds sam2 without its CUDA extension; the Dockerfile documents it.
    assert "SAM2_BUILD_CUDA=0" in (REPO_ROOT / "Makefile").read_text() and "SAM2_BUILD_CUDA=0" in text
    cmd = re.search(r"^CMD (.*)$", text, re.MULTILINE).group(1)
    assert cmd == '["gunicorn", "-c", "deploy/gunicorn.conf.py"]'


def test_gunicorn_config_serves_the_app_factory_without_preload_or_query_strings() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gunicorn_conf", DEPLOY / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    module, _, factory = conf.wsgi_app.partition(":")
    assert factory == "create_app_from_env()"
    assert callable(getattr(importlib.import_module(module), factory.removesuffix("()")))
    assert conf.worker_class == "gthread" and conf.preload_app is False
    assert "%(U)s" in conf.access_log_format and "%(r)s" not in conf.access_log_format  # no query strings
    assert "stack.sh" in (REPO_ROOT / "Makefile").read_text() and "gunicorn" in (DEPLOY / "stack.sh").read_text()
    assert "run-prod:" in (REPO_ROOT / "Makefile").read_text()


def test_shell_scripts_parse() -> None:
    for script in ("stack.sh", "gpu_smoke.sh", "download_checkpoints.sh", "fetch_checkpoint.sh"):
        path = DEPLOY / script
        assert os.access(path, os.X_OK), f"{script} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize(("name", "output"), [("label_config.xml", "BrushLabels"),
                                             ("label_config_polygons.xml", "PolygonLabels")])
def test_label_configs_offer_every_prompt_label_as_an_output_label(name: str, output: str) -> None:
    root = ET.fromstring((DEPLOY / name).read_text())
    clicks = {label.get("value") for label in root.find(".//KeyPointLabels[@smart='true']").iter("Label")}
    boxes = {label.get("value") for label in root.find(".//RectangleLabels[@smart='true']").iter("Label")}
    outputs = {label.get("value") for label in root.find(f".//{output}").iter("Label")}
    assert len(clicks) == 10 and clicks == boxes == outputs
    assert root.find(".//BrushLabels" if output == "PolygonLabels" else ".//PolygonLabels") is None


def test_healthcheck_script_reports_an_unreachable_url_as_unhealthy() -> None:
    port = free_port()
    proc = subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py"), "http", f"http://127.0.0.1:{port}/health"],
        capture_output=True, timeout=30,
    )
    assert proc.returncode == 1
