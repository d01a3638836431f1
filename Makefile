# Quick start: `make demo` runs the main job, `make test` runs the tests.
# Each creates .venv in the repo root when missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test typecheck sweep bench install clean docs notebook browser

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
test: $(STAMP) typecheck docs notebook
	XLA_FLAGS="--xla_backend_optimization_level=0 $$XLA_FLAGS" $(PY) -m pytest -n 2 --dist worksteal \
		-m "not slow and not browser" $(PYTEST_ARGS)
	$(MAKE) --no-print-directory browser

# The documentation site (mkdocs-material, the API reference from the docstrings) into site/; a warning (a broken
# reference, a missing page) is an error.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site

# The tutorial notebook, executed top to bottom on the embedded sample (a failing cell fails the target).
notebook: $(STAMP)
	XLA_FLAGS="--xla_backend_optimization_level=0 $$XLA_FLAGS" $(PY) scripts/run_notebook.py \
		examples/convolutions_in_jax_and_pytorch.ipynb

# The compare report and the docs site opened in Debian's chromium by Playwright, at 1280 and 390 px wide
# (skipped, with a note, where /usr/bin/chromium is missing: `apt-get install chromium`); screenshots go to
# artifacts/browser/.
browser: $(STAMP)
	$(PY) -m pytest -p no:xdist -m browser -q tests/test_browser.py

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
	rm -rf $(VENV) convbridge-report .pytest_cache .hypothesis .mypy_cache site artifacts
