# ChurnOps — `make run` serves the local stack (training a model first if none is registered);
# `make test` runs the whole suite. Both set up everything they need on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PREDICTOR_VENV := .venv-predictor
DRIFT_VENV := .venv-drift
TOOLS_VENV := .venv-tools
UV_VENV := .venv-uv
LOCKS := locks
EVIDENTLY_VENV := .venv-evidently
# Evidently, only for the drift benchmark's side-by-side comparison (scripts/bench_drift.py); never a
# dependency of ChurnOps. evidently 0.7.23 imports a pandas internal that pandas 3 removed.
EVIDENTLY := evidently==0.7.23 'pandas<3'
PIP := --disable-pip-version-check --quiet
export CHURNOPS_STACK_PREDICTOR_PYTHON ?= $(CURDIR)/$(PREDICTOR_VENV)/bin/python
export CHURNOPS_STACK_DETECTOR_PYTHON ?= $(CURDIR)/$(DRIFT_VENV)/bin/python
export CHURNOPS_CLUSTER_TOOLS_BIN ?= $(CURDIR)/$(TOOLS_VENV)/bin
# Every environment installs from a lock file with hashes (locks/*.txt, `make lock`): the installer's
# hash-checking mode refuses any file whose sha256 is not the locked one, and any requirement the lock does
# not pin. ChurnOps itself is then installed editable without dependencies and without build isolation (its
# build backend, hatchling, is in the lock too), so nothing is fetched unhashed.
# The installer is uv (pinned, itself installed by pip from locks/uv.txt with hashes): the same locks and the
# same hash checks as pip, in seconds instead of minutes (measured: locks/dev.txt into an empty venv, 16 s
# with a cold cache against about 4 min for pip), which keeps `make test` from a fresh clone in its budget.
PIP := --disable-pip-version-check --quiet
UV := $(UV_VENV)/bin/uv
UV_INSTALL = $(UV) pip install --quiet --python $(1)/bin/python
PIP_LOCKED := --require-hashes --only-binary :all: -r
PIP_PROJECT := --no-deps --no-build-isolation -e
# The lock tool: uv's resolver, in the same venv. --universal: one lock for every platform (markers where a
# platform differs), so a developer's Mac and the Linux images install the same versions.
UV_COMPILE := $(UV) pip compile --quiet --generate-hashes --universal --python-version 3.11 \
	--custom-compile-command 'make lock' $(UV_UPGRADE)

.PHONY: help
help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# One environment per runtime, as in the cluster each runs in its own image: kserve and MLServer pin
# incompatible FastAPI releases, and alibi-detect needs numpy<2. The predictor's holds only the `predictor`
# extra's libraries, not ChurnOps: like the stock MLServer image, it must serve our model without our code.
$(VENV)/.installed: $(UV_VENV)/.installed $(LOCKS)/dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(call UV_INSTALL,$(VENV)) $(PIP_LOCKED) $(LOCKS)/dev.txt
	$(call UV_INSTALL,$(VENV)) $(PIP_PROJECT) .
	touch $@

$(PREDICTOR_VENV)/.installed: $(UV_VENV)/.installed $(LOCKS)/predictor.txt
	$(PYTHON) -m venv $(PREDICTOR_VENV)
	$(call UV_INSTALL,$(PREDICTOR_VENV)) $(PIP_LOCKED) $(LOCKS)/predictor.txt
	touch $@

$(DRIFT_VENV)/.installed: $(UV_VENV)/.installed $(LOCKS)/drift.txt pyproject.toml
	$(PYTHON) -m venv $(DRIFT_VENV)
	$(call UV_INSTALL,$(DRIFT_VENV)) $(PIP_LOCKED) $(LOCKS)/drift.txt
	$(call UV_INSTALL,$(DRIFT_VENV)) $(PIP_PROJECT) .
	touch $@

$(TOOLS_VENV)/.installed: $(UV_VENV)/.installed $(LOCKS)/tools.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(call UV_INSTALL,$(TOOLS_VENV)) $(PIP_LOCKED) $(LOCKS)/tools.txt
	touch $@

$(UV_VENV)/.installed: $(LOCKS)/uv.txt
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install $(PIP) $(PIP_LOCKED) $(LOCKS)/uv.txt
	touch $@

# One command regenerates every lock from pyproject.toml (and locks/*.in): run it after changing a
# dependency, and commit the result. Versions already locked are kept where they still fit; to move
# everything to the newest releases: make lock UV_UPGRADE=--upgrade
.PHONY: lock
lock: $(UV_VENV)/.installed  ## regenerate locks/*.txt (pinned, hashed) from pyproject.toml
	$(PYTHON) scripts/extra_requirements.py predictor > $(LOCKS)/predictor.in
	$(UV_COMPILE) pyproject.toml $(LOCKS)/build.in --extra train --extra transformer --extra monitoring \
		--extra authorizer --extra dev -o $(LOCKS)/dev.txt
	$(UV_COMPILE) $(LOCKS)/predictor.in -o $(LOCKS)/predictor.txt
	$(UV_COMPILE) pyproject.toml $(LOCKS)/build.in --extra monitoring --extra alibi -o $(LOCKS)/drift.txt
	$(UV_COMPILE) pyproject.toml --extra monitoring --extra alibi -o $(LOCKS)/detector.txt
	$(UV_COMPILE) pyproject.toml --extra transformer -o $(LOCKS)/transformer.txt
	$(UV_COMPILE) pyproject.toml --extra authorizer -o $(LOCKS)/authorizer.txt
	$(UV_COMPILE) pyproject.toml $(LOCKS)/build.in --extra cluster -o $(LOCKS)/cluster.txt
	$(UV_COMPILE) $(LOCKS)/tools.in -o $(LOCKS)/tools.txt
	$(UV_COMPILE) $(LOCKS)/uv.in -o $(LOCKS)/uv.txt

$(EVIDENTLY_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(EVIDENTLY_VENV)
	$(EVIDENTLY_VENV)/bin/pip install $(PIP) --upgrade pip
	$(EVIDENTLY_VENV)/bin/pip install $(PIP) $(EVIDENTLY)
	touch $@

.PHONY: evidently
evidently: $(EVIDENTLY_VENV)/.installed  ## Evidently in its own venv, for `make bench-drift`'s comparison

.PHONY: install
install: $(VENV)/.installed $(PREDICTOR_VENV)/.installed $(DRIFT_VENV)/.installed $(TOOLS_VENV)/.installed  ## create the environments

.PHONY: run
run: install  ## train if no model is registered, then serve the local stack on 127.0.0.1
	$(VENV)/bin/churnops serve --train-if-missing

.PHONY: train
train: $(VENV)/.installed  ## train, evaluate and register a new model version
	$(VENV)/bin/churnops train

.PHONY: lint
lint: $(VENV)/.installed  ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy churnops core/churn_core model/churn_model transformer/churn_transformer monitoring/churn_monitoring authorizer/churn_authorizer

.PHONY: docs
docs: $(VENV)/.installed  ## build the documentation site (mkdocs --strict) into .churnops/site
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir .churnops/site

.PHONY: system-tools
system-tools:  ## podman, prometheus, wrk, shellcheck from Debian when missing (needs root)
	scripts/ensure-system-tools.sh

# The environments are created side by side, then lint, types and docs run beside pytest (which itself
# builds the images in the background while the other tests run): the suite's wall time is pytest's.
.PHONY: test
test:  ## the whole suite: lint, types, docs, unit, integration, containers
	$(MAKE) --no-print-directory -j4 install
	$(MAKE) --no-print-directory system-tools
	$(MAKE) --no-print-directory -j3 lint docs pytest

.PHONY: pytest
pytest: $(VENV)/.installed  ## the tests alone (unit, integration, containers)
	$(VENV)/bin/pytest

.PHONY: bench
bench: install  ## latency/throughput benchmark of the serving path (wrk, 32 connections)
	$(VENV)/bin/python scripts/bench_serving.py

# `make load LOAD_MINUTES=30` is the soak; scripts/capacity.py and scripts/faults.py the rest.
LOAD_MINUTES ?= 2
LOAD_RATE ?= 100
.PHONY: load
load: install  ## locust (client mix, LOAD_RATE req/s, LOAD_MINUTES) on the local stack; reports/load/soak
	$(VENV)/bin/python scripts/soak.py --minutes $(LOAD_MINUTES) --rate $(LOAD_RATE)

.PHONY: bench-drift
bench-drift: $(VENV)/.installed evidently  ## drift detection rates per shift and window size, beside Evidently's
	$(VENV)/bin/python scripts/bench_drift.py --chart docs/images/drift-detection-rate.png

.PHONY: clean
clean:  ## remove environments and local state
	rm -rf $(VENV) $(PREDICTOR_VENV) $(DRIFT_VENV) $(TOOLS_VENV) $(UV_VENV) $(EVIDENTLY_VENV) .churnops .mypy_cache .ruff_cache .pytest_cache
