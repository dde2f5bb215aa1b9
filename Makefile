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

# The stack. `docker compose` (v2) if installed, else docker-compose (1.29).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
BROADCASTERS ?= 3
# The demo site's image, built here; set APP_IMAGE (and APP_SETTINGS_MODULE)
# to run your project's own image instead, used as it is.
DEMO_IMAGE := django-realtime-notifications/app:dev
APP_IMAGE ?= $(DEMO_IMAGE)
EDGE_IMAGE ?= django-realtime-notifications/edge:dev
TAIL ?= 200
# .env (written by `make up`) holds this machine's secrets and choices; its
# values count here too, and so do the environment's and the command line's.
-include .env
SITE_PORT ?= 8000
WEBSOCKET_PORT ?= 8888
DJANGO_CSRF_TRUSTED_ORIGINS ?= http://localhost:$(SITE_PORT),http://127.0.0.1:$(SITE_PORT)
export SITE_PORT WEBSOCKET_PORT APP_IMAGE EDGE_IMAGE
# Derived from SITE_PORT: given to the commands that create containers, and
# not exported, so that a make started from a recipe derives its own.
COMPOSE_CREATE = DJANGO_CSRF_TRUSTED_ORIGINS="$(DJANGO_CSRF_TRUSTED_ORIGINS)" $(COMPOSE)

##@ General

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	/^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2 } \
	/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Stack

.PHONY: up
up: ## Build what is missing, start the stack (BROADCASTERS=3), wait until healthy
	@scripts/init-env.sh
	@scripts/choose-base-images.sh
	@# The host's CA bundle, for the image's build stage only (services/web/Dockerfile).
	@cp /etc/ssl/certs/ca-certificates.crt services/web/build-ca.crt 2>/dev/null || : > services/web/build-ca.crt
	$(COMPOSE) build $(if $(filter $(DEMO_IMAGE),$(APP_IMAGE)),migrate) edge
	$(COMPOSE_CREATE) up --detach --no-build --remove-orphans --scale broadcaster=$(BROADCASTERS)
	@scripts/wait-healthy.sh "$(COMPOSE)"
	@$(MAKE) --no-print-directory addresses

.PHONY: addresses
addresses: ## Print where the running stack answers
	@echo
	@echo "The stack is up ($(COMPOSE) project: $${COMPOSE_PROJECT_NAME:-$(notdir $(CURDIR))})."
	@echo "  site              http://localhost:$(SITE_PORT)/   (admin: http://localhost:$(SITE_PORT)/admin/)"
	@echo "  WebSocket         ws://localhost:$(SITE_PORT)/ws/   (same origin as the site)"
	@echo "  WebSocket direct  ws://localhost:$(WEBSOCKET_PORT)/"
	@echo "Next: 'make superuser' to create an administrator and log in;"
	@echo "      'make token USER=<name>', then: python -m websockets ws://localhost:$(WEBSOCKET_PORT)/"

.PHONY: down
down: ## Stop the stack; keep its data
	$(COMPOSE) down --remove-orphans

.PHONY: clean
clean: ## Stop the stack, remove its volumes and the images it built
	$(COMPOSE) down --volumes --remove-orphans
	docker image rm --force $(DEMO_IMAGE) $(EDGE_IMAGE) >/dev/null 2>&1 || true
	rm -f services/web/build-ca.crt

.PHONY: ps
ps: ## State of the stack's containers
	$(COMPOSE) ps

.PHONY: logs
logs: ## Recent logs of every service (TAIL=200 lines each)
	$(COMPOSE) logs --timestamps --tail=$(TAIL)

.PHONY: scale
scale: ## Set the number of broadcasters of the running stack: make scale BROADCASTERS=N
	$(COMPOSE_CREATE) up --detach --no-deps --no-recreate --scale broadcaster=$(BROADCASTERS) broadcaster
	@scripts/wait-healthy.sh "$(COMPOSE)"
	@echo "broadcasters: $(BROADCASTERS)"

.PHONY: token
token: ## Print a fresh WebSocket token for a user: make token USER=name
	@[ "$(origin USER)" = "command line" ] || { echo "usage: make token USER=<username>" >&2; exit 2; }
	@$(COMPOSE) exec -T web django-admin websocket_token "$(USER)"

.PHONY: superuser
superuser: ## Create an administrator, interactively or from DJANGO_SUPERUSER_USERNAME/_PASSWORD/_EMAIL
	@if [ -n "$${DJANGO_SUPERUSER_USERNAME:-}" ]; then \
	  $(COMPOSE) exec -T \
	    -e DJANGO_SUPERUSER_USERNAME="$$DJANGO_SUPERUSER_USERNAME" \
	    -e DJANGO_SUPERUSER_PASSWORD="$${DJANGO_SUPERUSER_PASSWORD:?set it too}" \
	    -e DJANGO_SUPERUSER_EMAIL="$${DJANGO_SUPERUSER_EMAIL:-}" \
	    web django-admin createsuperuser --noinput; \
	else \
	  $(COMPOSE) exec web django-admin createsuperuser; \
	fi

##@ Development

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv with the locked dependencies and test tools

$(VENV)/.installed: requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt
	@# The package itself, editable: its programs and code as a project has them.
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --editable .
	touch $@

.PHONY: wheel
wheel: venv ## Build the package's wheel into dist/ (pip install dist/*.whl in your project)
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .
	@ls dist/*.whl

SHELL_SCRIPTS := .ci/run $(wildcard scripts/*.sh images/*.sh images/*/*.sh k8s/scripts/*.sh \
  tests/e2e/*.sh services/web/entrypoint.sh)

.PHONY: lint
lint: venv ## Check formatting, lint and types (ruff, mypy, shellcheck)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy src services tests/e2e tests/adoption tests/test_docs.py bench
	@command -v shellcheck >/dev/null || { echo "shellcheck is missing: apt-get install shellcheck" >&2; exit 1; }
	shellcheck $(SHELL_SCRIPTS)

.PHONY: format
format: venv ## Format the code and apply safe lint fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: unit
unit: venv ## The package's, the demo's and the bench's tests, against PostgreSQL and Redis servers they start
	$(BIN)/pytest src services tests/test_servers.py tests/test_docs.py tests/adoption bench
	@# A project with its own user model: a user model is chosen once per process.
	$(BIN)/pytest --ds=live_notifications.tests.project.settings src/live_notifications/tests/project

# The fuzzer (src/live_notifications/broadcaster/tests/fuzz.py): make unit runs each target
# for a few thousand inputs; this runs each for FUZZ_SECONDS.
FUZZ_SECONDS ?= 300

.PHONY: fuzz
fuzz: venv ## Fuzz the broadcaster's request and frame readers (FUZZ_SECONDS=300 each)
	@for target in request frames; do \
	  echo "--- fuzzing $$target for $(FUZZ_SECONDS) s"; \
	  mkdir -p .fuzz; PYTHONPATH=src $(BIN)/python -m live_notifications.broadcaster.tests.fuzz $$target \
	    -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(CURDIR)/.fuzz/ -print_final_stats=1 2>&1 | grep -v '^INFO: Instrumenting'; \
	done

.PHONY: e2e
e2e: venv ## End-to-end suite: starts its own stack (project notifications-e2e), drives it, removes it
	$(BIN)/pytest tests/e2e

.PHONY: e2e-external
e2e-external: venv ## End-to-end suite against the running stack (make up), left running
	E2E_EXTERNAL_STACK=true $(BIN)/pytest tests/e2e

.PHONY: test
test: lint unit k8s-check e2e ## The whole test suite: checks, unit tests, manifests, end to end

.PHONY: lock
lock: venv ## Recompile the lock files from the .in files (needs PyPI)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile --quiet --python-version $(PYTHON_VERSION) --generate-hashes \
	  --no-strip-extras pyproject.toml services/web/requirements.in -o services/web/requirements.txt
	$(BIN)/uv pip compile --quiet --python-version $(PYTHON_VERSION) --generate-hashes \
	  services/web/requirements-build.in -o services/web/requirements-build.txt
	$(BIN)/uv pip compile --quiet --python-version $(PYTHON_VERSION) --generate-hashes \
	  pyproject.toml requirements-dev.in -o requirements-dev.txt
	$(BIN)/uv pip compile --quiet --python-version $(PYTHON_VERSION) --generate-hashes \
	  k8s/requirements.in -o k8s/requirements.txt

##@ Performance

# The bench (bench/, docs/performance.md): each server on a CPU of its own
# with real PostgreSQL, Redis and relay, the load generator on the others.
# Every BENCH_* variable of docs/performance.md is read from the environment;
# these two are the ones most often changed. Not part of `make test`.
BENCH_CONNECTIONS ?= 1000,10000
BENCH_SERVERS ?= broadcaster,broadcaster-mixed,baseline

.PHONY: bench
bench: venv ## Fan-out figures, broadcaster vs the how-to's design (BENCH_CONNECTIONS=1000,10000)
	BENCH_CONNECTIONS="$(BENCH_CONNECTIONS)" BENCH_SERVERS="$(BENCH_SERVERS)" \
	  PYTHONPATH=src:services $(BIN)/python -m bench

##@ Kubernetes

# The manifests are under k8s/ (k8s/README.md). Checking them needs no
# cluster: k8s-check installs its tools into their own virtualenv, from PyPI.
K8S_VENV ?= k8s/.venv
# Releases whose schemas the manifests must satisfy: the oldest they support
# (preStop's sleep action is on by default from 1.30) and the newest.
K8S_SCHEMA_VERSIONS ?= 1.30.0 1.37.0

K8S_BIN := $(K8S_VENV)/bin
K8S_TOOLS := $(K8S_VENV)/.installed
# What users apply: `kubectl apply -k` each of these (the namespace once,
# then the base or an overlay). The production overlay holds every component.
K8S_KUSTOMIZATIONS := k8s/namespace k8s k8s/overlays/local k8s/overlays/production
# Custom resources, KIND:API_VERSION: no schema in kubernetes-validate, which
# only warns about them; k8s/tests/test_custom_resources.py checks their
# structure instead. Any other kind without a schema fails k8s-check.
K8S_CUSTOM_KINDS := HTTPRoute:gateway.networking.k8s.io/v1 PodMonitor:monitoring.coreos.com/v1
K8S_RENDERED := k8s/.rendered
# make k8s-up and k8s-test drive k8s/scripts/local-cluster.sh with these.
K8S_CLUSTER_SCRIPT = KUBECTL=$(K8S_BIN)/kubectl COMPOSE="$(COMPOSE)" k8s/scripts/local-cluster.sh

# The tools, from k8s/requirements.txt (pinned, with hashes).
$(K8S_TOOLS): k8s/requirements.txt
	rm -rf $(K8S_VENV)
	$(PYTHON) -m venv $(K8S_VENV)
	$(K8S_BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r k8s/requirements.txt
	touch $@

.PHONY: k8s-check
k8s-check: $(K8S_TOOLS) ## Check the Kubernetes manifests without a cluster: render, schemas, checkov, parity
	@rm -rf $(K8S_RENDERED) && mkdir -p $(K8S_RENDERED)
	@for kustomization in $(K8S_KUSTOMIZATIONS); do \
	  $(K8S_BIN)/kubectl kustomize $$kustomization >$(K8S_RENDERED)/$${kustomization//\//-}.yaml; \
	  echo "rendered $$kustomization"; \
	done
	@for version in $(K8S_SCHEMA_VERSIONS); do \
	  report=$$($(K8S_BIN)/kubernetes-validate --strict --quiet --kubernetes-version $$version \
	    $(K8S_RENDERED)/*.yaml k8s/base/secrets.example.yaml 2>&1) || { echo "$$report"; exit 1; }; \
	  unknown=$$(sed -n "s/.*Couldn't find schema for kind \([^ ]*\) with api version \([^ ]*\) .*/\1:\2/p" \
	    <<<"$$report" | sort -u | grep -vxF $(foreach kind,$(K8S_CUSTOM_KINDS),-e $(kind)) || true); \
	  [[ -z $$unknown ]] || { echo "no schema to validate $$unknown against" >&2; exit 1; }; \
	  echo "valid against the OpenAPI schemas of Kubernetes $$version" \
	    "(but $(foreach kind,$(K8S_CUSTOM_KINDS),$(firstword $(subst :, ,$(kind)))): k8s/tests)"; \
	done
	@# checkov ignores dot-directories such as k8s/.rendered: name the files.
	@report=$$($(K8S_BIN)/checkov --config-file k8s/checkov.yaml \
	  $(foreach k,$(K8S_KUSTOMIZATIONS),--file $(K8S_RENDERED)/$(subst /,-,$(k)).yaml)) \
	  || { echo "$$report"; exit 1; }; \
	echo "$$report" | grep -v '^$$'; \
	[[ $$report == *"Passed checks: "[1-9]* ]] || { echo "checkov checked nothing" >&2; exit 1; }
	$(K8S_BIN)/pytest -c k8s/tests/pytest.ini k8s/tests

.PHONY: k8s-up
k8s-up: $(K8S_TOOLS) ## Deploy k8s/overlays/local to kubectl's cluster (kind, k3d, minikube...) and port-forward
	@$(K8S_CLUSTER_SCRIPT) up

.PHONY: k8s-test
k8s-test: $(K8S_TOOLS) ## Deploy k8s/overlays/local and run the end-to-end suite against it (ports 18000, 18888)
	@SITE_PORT=18000 WEBSOCKET_PORT=18888 $(K8S_CLUSTER_SCRIPT) test
