# lookalike: `make demo` sets everything up and runs the demo; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DB ?= data/demo.db
HOST ?= 127.0.0.1
PORT ?= 8000
export LOOKALIKE_DATA_DIR ?= $(CURDIR)/data

.PHONY: demo test venv system-deps lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

demo: venv system-deps
	$(PY) -m lookalike.demo --db $(DEMO_DB) --host $(HOST) --port $(PORT)

test: venv system-deps
	$(VENV)/bin/pytest -q

lint: venv
	$(VENV)/bin/ruff check lookalike tests bench

clean:
	rm -rf data .pytest_cache artifacts
