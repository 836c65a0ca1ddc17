# Every target does its own set-up: a fresh clone needs only Python 3.11+, Java 17+ and Maven
# (and redis-server, which deploy/local/redis installs with apt-get when run as root). Go comes
# from deploy/local/go: the one on PATH if recent enough, else fetched from the Go module proxy.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.installed-bench

# kustomize renders deploy/kubernetes for tests/deploy; built once from the Go module proxy.
KUSTOMIZE_VERSION ?= v5.7.1
KUSTOMIZE := .cache/kustomize-$(KUSTOMIZE_VERSION)/kustomize

.PHONY: setup kafka-fetch kustomize lock image-test demo test faults unit integration deploy-check lint bench \
    schemas clean metrics-doc status-page-screenshot

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(INSTALLED) kafka-fetch

kafka-fetch:
	deploy/local/kafka fetch

demo: setup
	deploy/local/with-services $(BIN)/webhook-consumer demo

test: setup kustomize
	KUSTOMIZE=$(CURDIR)/$(KUSTOMIZE) \
	  deploy/local/with-services $(BIN)/python -m pytest -q -rs -p no:cacheprovider

# Replicas killed, receivers that stall or cut connections, a broker stopped for 20 s, the
# limits' Redis partitioned or restarted empty: real processes, real Kafka and Redis, bounds
# asserted and figures printed (tests/faults, a few minutes).
faults: setup
	deploy/local/with-services $(BIN)/python -m pytest -q -rs -p no:cacheprovider tests/faults

unit: $(INSTALLED)
	$(BIN)/python -m pytest -q -rs tests/unit

integration: setup
	deploy/local/with-services $(BIN)/python -m pytest -q -rs tests/integration

# The deployment artifacts only: no broker, no network, no Docker engine, no cluster.
deploy-check: $(INSTALLED) kustomize
	KUSTOMIZE=$(CURDIR)/$(KUSTOMIZE) $(BIN)/python -m pytest -q -rs tests/deploy

# deploy/local/go is the one way to Go here: the go on PATH when recent enough, else a pinned
# release it fetches from the Go module proxy into .cache/go (a bare Debian 12 needs nothing).
kustomize: $(KUSTOMIZE)

$(KUSTOMIZE):
	@echo "building kustomize $(KUSTOMIZE_VERSION) into $(dir $@)"
	GOBIN=$(CURDIR)/$(dir $@) GOFLAGS=-modcacherw \
	  deploy/local/go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

$(BENCH_INSTALLED): $(INSTALLED)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

# Figures to watch, not targets: the service beside its ceilings and peers (bench/; its Go
# receiver is built with deploy/local/go). BENCH_ARGS=--quick for small sizes; see
# `python -m bench --help`.
bench: setup $(BENCH_INSTALLED)
	deploy/local/with-services $(BIN)/python -m bench $(BENCH_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check consumer tests bench
	$(BIN)/ruff format --check consumer tests bench
	$(BIN)/mypy

# The image built with Debian's buildah without a registry (on a base made from Debian's own
# packages: deploy/docker/offline-build; needs root, a few minutes), then run: its demo against
# Kafka and Redis, its user, its license, its locked dependencies (tests/image).
image-test: setup
	deploy/local/with-services sh -c 'image=$$(deploy/docker/offline-build) && \
	  WEBHOOK_CONSUMER_IMAGE=$$image $(BIN)/python -m pytest -q -p no:cacheprovider tests/image'

# The image's Python dependencies, pinned with their hashes for Python 3.11 on Linux (the
# image's); tests/deploy checks it still covers pyproject.toml's dependencies.
lock: $(INSTALLED)
	$(BIN)/pip install --quiet -e '.[dev,lock]'
	PIP_FIND_LINKS= $(BIN)/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url \
	  --no-emit-find-links \
	  --output-file deploy/docker/requirements.lock pyproject.toml

schemas: $(INSTALLED)
	$(BIN)/webhook-consumer schemas --out schemas --docs docs

# docs/metrics.md from deploy/metrics.yaml (tests/deploy fails when they disagree).
metrics-doc: $(INSTALLED)
	$(BIN)/python -m tests.deploy.metrics_doc

# docs/status-page.png from a real run (Kafka, a receiver, headless Chromium).
status-page-screenshot: setup
	STATUS_PAGE_SCREENSHOT=docs/status-page.png deploy/local/with-services \
	  $(BIN)/python -m pytest -q -rs -p no:cacheprovider tests/integration/test_status_page.py

clean:
	-deploy/local/kafka stop
	-deploy/local/redis stop
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
