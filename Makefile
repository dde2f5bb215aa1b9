# Run `make` to list the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV ?= .venv
UV_VERSION ?= 0.13.9
PYTHON_VERSION ?= 3.11

BIN := $(VENV)/bin

##@ General

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	/^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2 } \
	/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv with the locked dependencies and test tools

$(VENV)/.installed: requirements-dev.txt services/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

.PHONY: lint
lint: venv ## Check formatting, lint and types (ruff, mypy)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy services

.PHONY: format
format: venv ## Format the code and apply safe lint fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: unit
unit: venv ## Services' tests, against PostgreSQL and Redis servers they start
	$(BIN)/pytest services

.PHONY: test
test: lint unit ## The whole test suite

.PHONY: lock
lock: venv ## Recompile the lock files from the .in files (needs PyPI)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile --quiet --python-version $(PYTHON_VERSION) --generate-hashes \
	  --no-strip-extras services/requirements.in -o services/requirements.txt
	$(BIN)/uv pip compile --quiet --python-version $(PYTHON_VERSION) --generate-hashes \
	  requirements-dev.in -o requirements-dev.txt
