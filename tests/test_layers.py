"""The import layers hold: ``lint-imports`` (import-linter) passes, and fails on a planted wrong import.

The contracts live in ``pyproject.toml`` ([tool.importlinter]): no import cycles, sweep's
layers from ``__main__`` down to ``contract``, backends and workloads never importing the
multirun or the job, analysis and the embedded server importing only ``sweep.contract``, our
Hydra plugins importing only the multirun's API, nothing importing ``tests``.
The planted imports show the check is not vacuous: each one breaks the contract named.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_server import require_module

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sweep", "analysis", "benchmarks", "tests", "hydra_plugins")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the project at ``root`` (its pyproject.toml), that copy's packages first on the path."""
    script = Path(sys.executable).with_name("lint-imports")
    cmd = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([*cmd, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_lint_imports_passes_with_the_declared_contracts() -> None:
    require_module("importlinter", 'pip install -e ".[test]"')
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, planted, contract", [
    ("sweep/backends/hosts.py", "from sweep.multirun import rounds", "backends and workloads never import the multirun"),
    ("sweep/cells.py", "from sweep import plan", "sweep: one-way layers"),
    ("analysis/load.py", "from sweep import plan", "analysis imports only sweep.contract"),
    ("sweep/server/options.py", "from sweep import cells", "sweep: one-way layers"),
    ("benchmarks/anchor.py", "from tests import cells", "import nothing from tests"),
    ("sweep/store.py", "from sweep import provenance", "No import cycles anywhere"),
    ("sweep/server/app.py", "from sweep import config", "sweep.server imports only sweep.contract"),
    ("hydra_plugins/chimera_sweep/reload_aware_sweeper.py", "from sweep.backends import kinds",
     "hydra_plugins import the sweep's multirun API, no internals"),
])
def test_lint_imports_fails_on_a_planted_import(tmp_path: Path, module: str, planted: str, contract: str) -> None:
    require_module("importlinter", 'pip install -e ".[test]"')
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{planted}  # planted by the test\n", encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert any(contract in line for line in broken), result.stdout
    assert planted.split()[-1] in result.stdout       # the report names the planted import
