# Quick start: `make demo` runs the main job, `make test` runs the tests.
# Each creates .venv in the repo root when missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test typecheck sweep bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[all,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/convbridge compare

# The type checker on src/ (zero errors), then the tests and every module's doctests (pyproject's addopts).
# Most of the suite's time is XLA compiling one small program per shape: LLVM's -O0 codegen compiles them about
# a quarter faster; the HLO passes (and so the convolution algorithms XLA picks) are unchanged. `make sweep` runs
# XLA's defaults.
test: $(STAMP) typecheck
	XLA_FLAGS="--xla_backend_optimization_level=0 $$XLA_FLAGS" $(PY) -m pytest -n 2 --dist worksteal -m "not slow" $(PYTEST_ARGS)

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Release checks: every test, the slow ones included, with 1500 Hypothesis examples per property.
sweep: $(STAMP)
	HYPOTHESIS_PROFILE=sweep $(PY) -m pytest -n 2 --dist worksteal $(PYTEST_ARGS)

# The speed suite (not a test): every algorithm, the frameworks' own calls and auto, with ratios measured in one
# run; --tune lets auto time its candidates. Results: bench.json, bench.md, bench.png.
bench: $(STAMP)
	$(VENV)/bin/convbridge bench --tune --json bench.json --markdown bench.md --plot bench.png $(BENCH_ARGS)

clean:
	rm -rf $(VENV) convbridge-report .pytest_cache .hypothesis .mypy_cache
