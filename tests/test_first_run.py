"""A first run builds only what it uses: ``make demo`` never waits for llama.cpp's tools.

``llama-server`` and ``llama-bench`` cost ~6 min of compiling on 2 cores; only ``make test``, ``make bench`` and
``backend=llama_server`` use them. The Makefile's dry run (``make -n``) shows which targets build them, and a
sweep that needs them and finds none stops with one line naming ``make tools`` before anything is created.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sweep_cli import cli_env, run_module

REPO = Path(__file__).resolve().parent.parent


def _make_dry_run(target: str) -> str:
    """The commands ``make TARGET`` would run (nothing is run)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("target, builds_tools", [("demo", False), ("install", False), ("tools", True),
                                                   ("test", True), ("bench", True)])
def test_only_the_targets_that_use_the_tools_build_them(target: str, builds_tools: bool) -> None:
    commands = _make_dry_run(target)
    assert ("install_engine.py --tools-only" in commands) is builds_tools, commands
    if target in ("demo", "test", "bench", "install"):
        assert "install_engine.py" in commands, "the engine (llama-cpp-python wheel) is built by every target"


def test_install_engine_builds_the_wheel_or_the_tools_never_both() -> None:
    """``--help`` names the split; the default run is the engine only (what ``make install`` calls)."""
    out = subprocess.run([sys.executable, "scripts/install_engine.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    assert "--tools-only" in out.stdout and "make tools" in out.stdout


def test_a_llama_server_sweep_without_the_tools_is_one_line_naming_make_tools(tmp_path: Path) -> None:
    """Through the real CLI, single run and multirun: exit 2, one line, no sweep directory, no request."""
    empty = tmp_path / "no-tools"
    empty.mkdir()
    # CHIMERA_LLAMA_TOOLS pointing at an empty directory: the lookup neither takes the cache nor PATH
    env = cli_env(CHIMERA_LLAMA_TOOLS=str(empty))
    for multirun in ([], ["-m"]):
        out_root = tmp_path / f"out{len(multirun)}"
        run = run_module("sweep", *multirun, "backend=llama_server", "trials=1", f"output_root={out_root}", env=env)
        assert run.returncode == 2, run.stderr
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, run.stderr
        assert lines[0].startswith("error: llama-server is not built: run 'make tools'"), lines[0]
        assert "Traceback" not in run.stdout + run.stderr
        assert not out_root.exists() or not any(out_root.rglob("*.parquet")), "a sweep that cannot run measured"
