# Every target does its own set-up: a fresh clone needs only Python 3.11+, Java 17+ and Maven.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.installed-bench

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
	deploy/local/with-kafka $(BIN)/webhook-consumer demo

test: setup
	deploy/local/with-kafka $(BIN)/python -m pytest -q -p no:cacheprovider

unit: $(INSTALLED)
	$(BIN)/python -m pytest -q tests/unit

integration: setup
	deploy/local/with-kafka $(BIN)/python -m pytest -q tests/integration

$(BENCH_INSTALLED): $(INSTALLED)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

# Figures to watch, not targets: the service beside its ceilings and peers (bench/; also needs
# Go). BENCH_ARGS=--quick for small sizes; see `python -m bench --help`.
bench: setup $(BENCH_INSTALLED)
	deploy/local/with-kafka $(BIN)/python -m bench $(BENCH_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check consumer tests bench
	$(BIN)/ruff format --check consumer tests bench
	$(BIN)/mypy

schemas: $(INSTALLED)
	$(BIN)/webhook-consumer schemas --out schemas

clean:
	-deploy/local/kafka stop
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
