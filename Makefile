# Quick start: `make demo` (venv + install + the main job on the bundled CNT tilt series)
#              `make test` (venv + test extras + the test suite)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: venv install demo test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

venv: $(BIN)/python

install: venv
	$(BIN)/python -m pip install --quiet -e ".[test]"

demo: install
	@mkdir -p $(OUT)
	$(BIN)/ptyhpc run examples/cnt_demo.yaml
	@cat $(OUT)/report.txt

test: install
	$(BIN)/python -m pytest -q -ra

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not slow"

bench: install
	$(BIN)/python benchmarks/ptycho_iteration.py

clean:
	rm -rf $(OUT) .pytest_cache
