# Fresh machine: `make demo` (set up + main job) or `make test` (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/bayesmtl fit --dataset school --split 1 --method mtrl --inference map --out reports/school-mtrl

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check bayesmtl tests benchmarks

bench: setup
	$(PY) benchmarks/bench_core.py
