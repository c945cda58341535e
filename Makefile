# Quick start: `make demo` (venv + the package + the main job on the bundled CNT tilt series)
#              `make test` (venv + the package with its test extra + the test suite; what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: venv install install-test demo test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

venv: $(BIN)/python

# Stamps inside the venv: `make demo` installs the package alone (no pytest, ASTRA or MPI);
# `make test` adds the test extra; editing pyproject.toml reinstalls.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	@mkdir -p $(OUT)
	$(BIN)/ptyhpc run examples/cnt_demo.yaml
	@cat $(OUT)/report.txt

test: install-test
	$(BIN)/python -m pytest -q -ra

test-fast: install-test
	$(BIN)/python -m pytest -q -ra -m "not slow"

bench: install
	$(BIN)/python benchmarks/ptycho_iteration.py

clean:
	rm -rf $(OUT) .pytest_cache build
