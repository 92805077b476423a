# `make demo` sets everything up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint clean report

install: $(STAMP)

# --no-compile: pip byte-compiles every installed module by default (all of torch, MLflow, Prefect...);
# Python compiles what is imported, once, on first use instead.
# torch first, pinned: here pip finds the local CPU wheel; on a GPU machine the same
# pin resolves to the CUDA build. The project's own `torch>=2.4` then adds nothing.
$(STAMP): pyproject.toml
	@echo "setup: creating $(VENV) and installing torch 2.13.0, then the project with MLflow, Optuna, Prefect (a few minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "setup: installing torch==2.13.0 (the CPU wheel here, the CUDA build on a GPU machine)"
	$(PY) -m pip install -q --no-compile torch==2.13.0
	@echo "setup: installing the project and its dependencies (pip install -e '.[dev]')"
	$(PY) -m pip install -q --no-compile -e '.[dev]'
	touch $(STAMP)
	@echo "setup: done ($(VENV))"

demo: install
	$(VENV)/bin/forecasting demo

# Two test processes, each a whole test file at a time (module-scoped servers stay in one process;
# every process has its own Prefect home): the suite spends most of its time waiting on servers
# and subprocesses, so two cut it from 898 s to 566 s on this 2-core machine (same 413 tests).
# `pytest tests/test_x.py` still runs serially.
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

# Benchmarks (results under benchmarks/results/): make bench-etth1 | bench-m4_hourly | bench-speed | bench-scaleout
bench-%: install
	$(PY) benchmarks/$*.py

report: install
	$(PY) benchmarks/report.py --readme README.md

lint: install
	$(VENV)/bin/ruff check forecasting flows tests benchmarks

# Everything the project created locally: the virtualenv, the MLflow store and Optuna studies
# (all of mlruns/ but its .gitkeep), processed data and forecasts.
clean:
	rm -rf $(VENV) data/processed data/forecasts
	find mlruns -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
