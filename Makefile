# Two commands do everything: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test lint unit bench docs proto clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: install
	$(BIN)/arrowport serve

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

# The tests get a real PostgreSQL and S3 server (ARROWPORT_TEST_* variables), stopped afterwards.
# They run TEST_WORKERS at a time (pytest-xdist): most of a test's time is spent waiting on the
# servers it starts, so three at once on two cores take half the time of one.
TEST_WORKERS ?= 3
unit: install
	$(BIN)/python scripts/test_services.py run -- \
		$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test: lint unit

bench: install
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

docs: install
	$(BIN)/python scripts/sync_readme.py

# The Flight protocol's Python messages, generated from the .proto files beside them.
PROTO_DIR := src/arrowport/flight/protocol
proto: install
	cd $(PROTO_DIR) && ../../../../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. *.proto

clean:
	$(PYTHON) scripts/test_services.py stop
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
