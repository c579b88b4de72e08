PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install chromium test test-fast test-integrations lint demo bench quality clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch==2.13.0 first: its CPU wheel is on local disk; a bare "torch" would pull a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,faces]"
	touch $(STAMP)

install: $(STAMP)

# headless Chromium for the browser test of ifqa compare's HTML report (tests/test_compare.py), installed with
# apt-get when it is missing and this runs as root; otherwise that test skips and says why
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium is not installed: the HTML report's browser test will skip"

# the test suite and the docstring examples of the package (pyproject: --doctest-modules)
test: $(STAMP) chromium
	$(BIN)/python -m pytest -q --durations=25 tests ifqa_loss

# the same without the tests marked slow: a few minutes
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests ifqa_loss

# tests/integrations in their own venv: basicsr needs torchvision, which does not import beside torch 2.13.0.
# torch 2.14.1 and torchvision 0.29.1 come from this machine's disk; basicsr-fixed is PyPI's basicsr 1.4.2 with
# the import that newer torchvision removed (functional_tensor) fixed.
INT_VENV := .venv-integrations
INT_STAMP := $(INT_VENV)/.installed

$(INT_STAMP): pyproject.toml
	$(PY) -m venv $(INT_VENV)
	$(INT_VENV)/bin/pip install --quiet --upgrade pip
	$(INT_VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(INT_VENV)/bin/pip install --quiet basicsr-fixed==1.4.2
	$(INT_VENV)/bin/pip install --quiet -e ".[basicsr]" "pytest>=7"
	touch $(INT_STAMP)

test-integrations: $(INT_STAMP)
	$(INT_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/integrations

lint: $(STAMP)
	$(BIN)/ruff check ifqa_loss tests benchmarks examples fuzz

demo: $(STAMP)
	$(BIN)/python examples/demo.py --out demo_out

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py

quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py

clean:
	rm -rf $(VENV) $(INT_VENV) demo_out .pytest_cache
