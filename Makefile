# glacierscale: `make demo` maps the Athabasca Glacier sample; `make test` runs every check.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint unit system-deps clean

# torch goes first and alone: the CPU wheel; letting a dependency resolve torch pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/glacierscale demo --out glacierscale-demo

# Chromium renders the Prefect UI in the orchestration tests; installed from Debian when root.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "chromium not installed: the Prefect UI screenshot test will be skipped"

lint: install
	$(BIN)/ruff check src tests benchmarks flows
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest -m "not integration" -q

test: install system-deps lint
	$(BIN)/pytest -q --durations=15

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache glacierscale-demo
