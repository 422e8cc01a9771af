# The README's two commands: `make demo` and `make test`. Both create or refresh .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pip

.PHONY: demo test check install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "removal-audit needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/removal-audit demo

test: $(STAMP) promtool
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/ruff format --check pipelines connectors tests
	$(BIN)/ruff check pipelines connectors tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .demo

# A real single-node Kafka broker (KRaft) on 127.0.0.1:$(KAFKA_PORT), jars from Maven Central
# (needs java 17+ and mvn); data and log in .kafka/. Stop it with `make kafka-stop`.
KAFKA_PORT ?= 19092

.PHONY: kafka kafka-stop

kafka: $(STAMP)
	$(BIN)/python docker/kafka/broker.py start --port $(KAFKA_PORT) --dir .kafka

kafka-stop: $(STAMP)
	$(BIN)/python docker/kafka/broker.py stop --dir .kafka

# Beam's Prism runner for the streaming job, built from the Beam Go module with `go install`
# into the user cache (about 5 minutes the first time); prints the binary's path.
.PHONY: prism

prism: $(STAMP)
	$(BIN)/python docker/prism/build.py

# Prometheus' promtool for the alerting rules' tests (docker/prometheus): on PATH, cached, or
# taken from the distribution's prometheus package into the user cache (seconds; no root
# needed); prints its path.
.PHONY: promtool

promtool: $(STAMP)
	$(BIN)/python docker/prometheus/promtool.py

# The benchmark (bench/RESULTS.md): the same generated events through the floor (Kafka ->
# fastavro -> DuckDB), the batch and streaming pipeline and plain DuckDB SQL, then the
# latency run; starts its own broker, builds Prism. The default reproduces RESULTS.md's
# table (about 90 minutes on 2 cores): every path at 100k and 1M, the floor, batch and SQL
# at 10M (streaming at 10M would take hours). `make bench BENCH_ARGS="--sizes 100000"`
# runs one size; `python -m bench.run --help` lists the options.
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_ARGS ?= --sizes 100000,1000000,10000000 --limit streaming=1000000 \
	--latency-rate 300 --latency-seconds 60

.PHONY: bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.report
