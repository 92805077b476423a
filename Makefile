# `make demo` sets everything up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint clean report

install: $(STAMP)

# torch first, pinned: here pip finds the local CPU wheel; on a GPU machine the same
# pin resolves to the CUDA build. The project's own `torch>=2.4` then adds nothing.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/forecasting demo

test: install
	$(PY) -m pytest -q

# Benchmarks (results under benchmarks/results/): make bench-etth1 | bench-m4_hourly | bench-speed | bench-scaleout
bench-%: install
	$(PY) benchmarks/$*.py

report: install
	$(PY) benchmarks/report.py --readme README.md

lint: install
	$(VENV)/bin/ruff check forecasting flows tests benchmarks

clean:
	rm -rf $(VENV) mlruns/mlflow.db mlruns/artifacts data/processed data/forecasts
