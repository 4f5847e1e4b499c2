# RP-SAM2 backend: `make run` starts the backend (embedded default: no Redis, jobs in-process),
# `make test` sets everything up and runs every test.  See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
LS_VENV := .venv-ls
PORT ?= 9090
# `label-studio-ml start` runs `python rpsam2_backend/_wsgi.py` with the first python on PATH.
export PATH := $(BIN):$(PATH)

TORCH := torch==2.14.1 torchvision==0.29.1
SAM2 := sam2==1.1.0
LABEL_STUDIO_ML := label-studio-ml==1.0.9
LABEL_STUDIO := label-studio==1.23.2

.PHONY: venv ls-venv redis system-deps browser-deps stack-up stack-down run run-prod run-demo worker checkpoints test test-fast lint bench clean

$(VENV)/.installed: requirements.txt setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q $(TORCH)
	# sam2 is an sdist: build it against the torch above, without its optional CUDA extension.
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation $(SAM2)
	$(BIN)/pip install -q -r requirements.txt
	# Without its 2021 pins (Flask 1.1.2, Werkzeug 2.0.2): requirements.txt lists what it needs.
	$(BIN)/pip install -q --no-deps $(LABEL_STUDIO_ML)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

# The Label Studio server pins its own Django/rq/redis stack: it lives in its own venv (tests only).
$(LS_VENV)/.installed:
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q --upgrade pip
	$(LS_VENV)/bin/pip install -q $(LABEL_STUDIO)
	touch $@

ls-venv: $(LS_VENV)/.installed

redis:
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)

system-deps: redis

# Debian's chromium for the browser test (Playwright drives it by path; no browser download).
browser-deps:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

# The compose stack without Docker: redis-server, click + train workers, backend (deploy/stack.sh).
stack-up: venv system-deps
	deploy/stack.sh start

stack-down:
	deploy/stack.sh stop

# The whole set-up: venv, the SAM2 checkpoint the settings name (fetched once, checked), the server.
run: venv
	PYTHON=$(BIN)/python deploy/fetch_checkpoint.sh
	label-studio-ml start rpsam2_backend -p $(PORT)

# The production web server (gunicorn, deploy/gunicorn.conf.py) over the same app.
run-prod: venv
	PYTHON=$(BIN)/python deploy/fetch_checkpoint.sh
	PORT=$(PORT) $(BIN)/gunicorn -c deploy/gunicorn.conf.py

# Random-weight tiny SAM2: the whole path works, the masks are meaningless.  Never for labelling.
run-demo: venv
	RPSAM2_SAM2_CONFIG=configs/sam2.1/sam2.1_hiera_t.yaml RPSAM2_ALLOW_RANDOM_WEIGHTS=1 \
		label-studio-ml start rpsam2_backend -p $(PORT)

worker: venv
	$(BIN)/rpsam2-worker

checkpoints:
	deploy/download_checkpoints.sh checkpoints

test: venv ls-venv system-deps browser-deps
	$(BIN)/python -m pytest

test-fast: venv system-deps
	$(BIN)/python -m pytest -m "not labelstudio and not browser and not slow"

# ruff, and the architecture's import rule (contracts in pyproject.toml; see README "Architecture").
lint: venv
	$(BIN)/ruff check rpsam2_backend trainer tests benchmarks deploy
	$(BIN)/lint-imports

bench: venv system-deps
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache build *.egg-info
