# `make train` and `make test` work on a fresh machine: they create .venv first.
# Python 3.12: `python3.12` where it runs, else pyenv's 3.12 (this machine image has it).
PYTHON ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
  $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo $$p; break; }; done)
# The PyTorch reference (benchmarks/peers.py) uses the local CPU wheel, built for 3.11.
TORCH_PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/m64
# glibc's malloc asks for transparent huge pages (Linux THP in `madvise` mode): XLA
# on CPU otherwise takes a 4 KiB page fault on every fresh page of its large buffers
# (measured in docs/notes/2026-11-23-page-faults-and-rotary.md). Ignored elsewhere.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1
# Test files run in parallel (pytest-xdist, a file's tests stay together), one worker
# per core up to 4; tests/conftest.py sets the 4 fake CPU devices and the compile flags.
# `make test` is the full suite (what CI runs, .ci/run); `make test-fast` leaves out the
# tests marked slow (pytest.ini: training runs, child processes, over ~5 s of CPU; the
# run names any unmarked test over that). Each prints its wall time last (test-fast:
# under 2 minutes on 2 cores), and --durations=0 lists every test's.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n > 4 ? 4 : n )))

.PHONY: setup lock train eval test test-fast bench peers peers-venv wheels

# requirements.lock pins every distribution of the tested environment; `make lock`
# rebuilds it from requirements.txt (the direct dependencies).
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: Python 3.12 not found; run with PYTHON=/path/to/python3.12"; exit 1; }
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install -q --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check -q
	touch $@

lock:
	@test -n "$(PYTHON)" || { echo "make: Python 3.12 not found; run with PYTHON=/path/to/python3.12"; exit 1; }
	$(PYTHON) -m venv --clear .venv-lock
	.venv-lock/bin/pip install -q -r requirements.txt
	{ echo "# Every distribution \`make setup\` installs (from requirements.txt by \`make lock\`)."; \
	  .venv-lock/bin/pip freeze --all --exclude pip; } > requirements.lock
	rm -rf .venv-lock

setup: $(VENV)/.installed

train: setup
	$(PY) train.py --config=configs/m64.py --workdir=$(WORKDIR)

eval: setup
	$(PY) eval.py --workdir=$(WORKDIR)

test: setup
	JAX_PLATFORMS=cpu $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	JAX_PLATFORMS=cpu $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# The peer table: our LM train step and attention layer against a plain PyTorch GPT
# (SDPA) on this machine, paired rounds (benchmarks/peers.py, docs/benchmarks.md).
bench: setup peers-venv
	$(PY) benchmarks/peers.py

# The PyTorch reference of benchmarks/peers.py lives in its own venv (CPU wheel, local
# file); torch is never a dependency of the project or its tests.
peers-venv: .venv-torch/.installed
.venv-torch/.installed:
	$(TORCH_PYTHON) -m venv .venv-torch
	.venv-torch/bin/pip install -q torch==2.13.0 numpy x-transformers==2.31.10
	touch $@

peers: setup peers-venv
	$(PY) benchmarks/peers.py

# The pure-Python wheels the GPU machine lacks (benchmarks/accelerator_check.py imports
# nothing else it does not have), at requirements.lock's versions, into .whl/ (ignored;
# carried with the working tree): docs/benchmarks.md, "Accelerator check".
DEVICE_WHEELS ?= ml_collections
wheels: setup
	rm -rf .whl && mkdir .whl
	for name in $(DEVICE_WHEELS); do \
	  pin=$$(grep -i "^$$name==" requirements.lock) || { echo "make: $$name is not in requirements.lock"; exit 1; }; \
	  $(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl "$$pin" || exit 1; \
	done
	@if ls .whl | grep -v -- '-none-any\.whl$$'; then echo "make: not pure Python (above)"; exit 1; fi
	@du -sh .whl
