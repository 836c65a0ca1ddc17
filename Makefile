# Every target does its own set-up: a fresh clone needs only Python 3.11+, Java 17+ and Maven
# (and redis-server, which deploy/local/redis installs with apt-get when run as root).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: setup kafka-fetch demo test unit integration lint bench clean

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

test: setup
	deploy/local/with-services $(BIN)/python -m pytest -q -p no:cacheprovider

unit: $(INSTALLED)
	$(BIN)/python -m pytest -q tests/unit

integration: setup
	deploy/local/with-services $(BIN)/python -m pytest -q tests/integration

# Figures to watch, not targets: throughput and peak memory of a real `run` process.
bench: setup
	deploy/local/with-services $(BIN)/python -m tests.bench.throughput

lint: $(INSTALLED)
	$(BIN)/ruff check consumer tests
	$(BIN)/ruff format --check consumer tests
	$(BIN)/mypy

schemas: $(INSTALLED)
	$(BIN)/webhook-consumer schemas --out schemas

clean:
	-deploy/local/kafka stop
	-deploy/local/redis stop
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
