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

.PHONY: install demo test test-slow test-all test-rlds lint format clean

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

# one pytest process per file (scripts/test-slow.sh says why)
test-slow: $(STAMP)
	PY=$(PY) ./scripts/test-slow.sh

test-all: test test-slow

# RLDS / TFDS reading needs tensorflow, which stays out of the torch venv (it would downgrade h5py and adds
# ~1.8 GB): it gets its own venv, and the vlaforge data modules it needs import no torch.
RLDS_VENV  ?= .venv-rlds
RLDS_STAMP := $(RLDS_VENV)/.vlaforge-rlds-installed

$(RLDS_STAMP): pyproject.toml constraints.txt
	test -x $(RLDS_VENV)/bin/python || python3 -m venv $(RLDS_VENV)
	$(RLDS_VENV)/bin/pip install -q -c constraints.txt tensorflow-cpu==2.21.0 tensorflow-datasets==4.9.10 importlib_resources==7.1.0 \
		pyarrow==26.0.1 av==18.1.0 'numpy>=2.0,<3' 'pillow>=11' 'tqdm>=4.66' h5py pytest==9.2.0 pytest-timeout==2.4.0
	$(RLDS_VENV)/bin/pip install -q --no-deps -e .
	touch $(RLDS_STAMP)

# --noconftest: tests/conftest.py imports torch, which this venv does not have. VLAFORGE_REQUIRE_RLDS turns a
# missing tensorflow into a failure instead of a skip.
test-rlds: $(RLDS_STAMP)
	VLAFORGE_REQUIRE_RLDS=1 $(RLDS_VENV)/bin/python -m pytest --noconftest -q tests/data/test_rlds.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples
	$(VENV)/bin/ruff format --check src tests examples

format: $(STAMP)
	$(VENV)/bin/ruff format src tests examples
	$(VENV)/bin/ruff check --fix src tests examples

clean:
	rm -rf $(VENV) $(RLDS_VENV) .pytest_cache .ruff_cache
