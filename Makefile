# vlaforge: every target bootstraps what it needs (venv, pip installs, Debian packages as root).
# `make demo` is the main job; `make test` is the test suite CI runs.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.vlaforge-installed
PYTEST  := $(PY) -m pytest
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test test-slow test-all lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/system-deps.sh
	./scripts/system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vlaforge demo

test: $(STAMP)
	$(PYTEST) -m "not slow" -q

test-slow: $(STAMP)
	$(PYTEST) -m "slow" -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no slow tests collected"; exit 0; fi; exit $$rc

test-all: test test-slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples
	$(VENV)/bin/ruff format --check src tests examples

format: $(STAMP)
	$(VENV)/bin/ruff format src tests examples
	$(VENV)/bin/ruff check --fix src tests examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
