PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo bench quality clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch==2.13.0 first: its CPU wheel is on local disk; a bare "torch" would pull a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# the test suite and the docstring examples of the package (pyproject: --doctest-modules)
test: $(STAMP)
	$(BIN)/python -m pytest -q tests ifqa_loss

# the same without the tests marked slow: a few minutes
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests ifqa_loss

lint: $(STAMP)
	$(BIN)/ruff check ifqa_loss tests benchmarks examples fuzz

demo: $(STAMP)
	$(BIN)/python examples/demo.py --out demo_out

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py

quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
