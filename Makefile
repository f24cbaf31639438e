# Every target builds its own virtual environment first: a fresh machine needs
# nothing but Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint run bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# pytest exits 5 when it collects no tests; that is not a failure of the code.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest; status=$$?; [ $$status -eq 5 ] && status=0; exit $$status

# Starts the service on http://127.0.0.1:8080 (gunicorn, SQLite feedback store in ./data).
run: $(STAMP)
	TPI_CDS_CONFIG=$${TPI_CDS_CONFIG:-config/development.toml} $(BIN)/tpi-cds serve

# The benchmark: gunicorn + wrk, workloads against the ceiling; writes bench/results.md.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
