# Every target builds its own virtual environment first: a fresh machine needs
# nothing but Python 3.11. `make run` and `make bench` use .venv (the service and its
# runtime dependencies only); `make test` and `make lint` use .venv-test (plus the test
# tools, among them a FHIR server that brings a web framework of its own).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
TEST_VENV := .venv-test
TEST_BIN := $(TEST_VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help test lint run bench bench-screen clean

help:  ## list the targets
	@echo "tpi-cds: CDS Hooks decision support for trigger point injections"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 22

$(VENV)/.installed: setup.cfg pyproject.toml
	@echo "setting up $(VENV): the service and its runtime dependencies (about a minute)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar off --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e .
	touch $@

$(TEST_VENV)/.installed: setup.cfg pyproject.toml
	@echo "setting up $(TEST_VENV): the service and the test tools (a minute or two)..."
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_BIN)/python -m pip install --progress-bar off --upgrade pip
	$(TEST_BIN)/python -m pip install --progress-bar off -e '.[test]'
	touch $@

# pytest exits 5 when it collects no tests; that is not a failure of the code.
test: $(TEST_VENV)/.installed  ## lint, then the whole test suite
	$(TEST_BIN)/ruff check .
	$(TEST_BIN)/python -m pytest; status=$$?; [ $$status -eq 5 ] && status=0; exit $$status

run: $(VENV)/.installed  ## the service on http://127.0.0.1:8080 (SQLite feedback store in ./data)
	TPI_CDS_CONFIG=$${TPI_CDS_CONFIG:-config/development.toml} $(BIN)/tpi-cds serve

bench: $(VENV)/.installed  ## the benchmark (gunicorn + wrk, workloads against the ceiling)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The spark extra (PySpark) comes on top of .venv for this benchmark only.
$(VENV)/.spark-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --progress-bar off -e '.[spark]'
	touch $@

bench-screen: $(VENV)/.spark-installed  ## screening benchmark: embedded vs Spark local[1]/[2]
	$(BIN)/python -m bench.screen $(BENCH_ARGS)

lint: $(TEST_VENV)/.installed  ## ruff check and format check
	$(TEST_BIN)/ruff check .
	$(TEST_BIN)/ruff format --check .

clean:  ## remove both virtual environments and build files
	rm -rf $(VENV) $(TEST_VENV) build *.egg-info
