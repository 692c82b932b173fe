"""Paths that used to break without a test noticing: resume identity, retries, backoff.

``cell_hash`` is pinned to values computed by the original implementation: a change
to what the hash covers would make every older sweep un-resumable, silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from sweep.cells import Cell, Prompt
from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import run_sweep, trials_of

PROMPT = (Prompt("0", "Generate a technical report"),)


@pytest.mark.parametrize(("cell", "pinned"), [
    (Cell("chimera", "gemma3:latest", "ollama", "http://127.0.0.1:11434", {"num_ctx": 1024, "temperature": 0.6},
          "report", PROMPT, None, "generate", None), "0c6caafe31c25269"),
    (Cell("baseline", "gemma3:270m", "embedded", None, {"num_predict": 64, "seed": 42}, "report", PROMPT, None,
          "generate", None), "94829f1d26be95ce"),
])
def test_cell_hash_is_pinned(cell: Cell, pinned: str) -> None:
    assert cell.cell_hash == pinned
    assert cell.file_stem.endswith(pinned)


def test_cell_hash_ignores_option_order() -> None:
    a = Cell("chimera", "m", "ollama", None, {"num_ctx": 1, "seed": 2}, "w", PROMPT, None, "generate", None)
    b = Cell("chimera", "m", "ollama", None, {"seed": 2, "num_ctx": 1}, "w", PROMPT, None, "generate", None)
    assert a.cell_hash == b.cell_hash


def test_three_retries_with_doubling_backoff(standin: StandIn, tmp_path: Path) -> None:
    """retries=3: the 4th attempt succeeds; the waits between attempts are 0.2, 0.4, 0.8 s (at least).

    Judged on the stored ``started_at`` stamps, as lower bounds: a loaded machine only
    lengthens a wait, while a backoff that does not double (0.2 s each) fails the last gap.
    """
    standin.queue(Script(), Script(fault="http_500"), Script(fault="http_500"), Script(fault="http_500"), Script())
    result = run_sweep("backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3", "trials=1",
                       "warmup=1", "backend.retries=3", "backend.retry_backoff_s=0.2",
                       "backend.max_consecutive_failures=5", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    trial = df[~df["warmup"]].sort_values("attempt")
    assert trial["attempt"].tolist() == [1, 2, 3, 4]
    assert trial["status"].tolist() == ["http_error"] * 3 + ["ok"]
    assert trial["http_status"].tolist() == [500, 500, 500, 200]
    gaps = pd.Series(trial["started_at"].to_numpy()).diff().dt.total_seconds().dropna().tolist()
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.8, gaps


def test_a_404_is_not_retried_because_of_its_code(standin: StandIn, tmp_path: Path) -> None:
    standin.queue(Script(), Script(fault="http_404"))
    result = run_sweep("backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3", "trials=1",
                       "warmup=1", "backend.retries=3", "backend.retry_backoff_s=0", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    failed = df[df["status"] == "http_error"]
    assert failed["attempt"].tolist() == [1] and failed["http_status"].tolist() == [404]


def test_a_missing_engine_fails_on_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import fixtures_server

    monkeypatch.setattr(fixtures_server, "ON_CI", True)
    with pytest.raises(pytest.fail.Exception, match="missing on CI"):
        fixtures_server.require(False, "llama-cpp-python is not installed")
    monkeypatch.setattr(fixtures_server, "ON_CI", False)
    with pytest.raises(pytest.skip.Exception):
        fixtures_server.require(False, "llama-cpp-python is not installed")
    fixtures_server.require(True, "present")   # nothing happens


def test_module_and_tool_prerequisites_fail_on_ci_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """``require_module``/``require_tool`` go through ``require``: a missing client package or
    llama-server fails a CI build instead of skipping its tests."""
    from sweep.backends import llama_tools
    from tests import fixtures_server

    monkeypatch.setattr(fixtures_server, "ON_CI", True)
    with pytest.raises(pytest.fail.Exception, match="no_such_package_xyz is not installed"):
        fixtures_server.require_module("no_such_package_xyz", "pip install it")
    monkeypatch.setattr(llama_tools, "tool_path", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="missing on CI"):
        fixtures_server.require_tool("llama-server")
    monkeypatch.setattr(fixtures_server, "ON_CI", False)
    with pytest.raises(pytest.skip.Exception):
        fixtures_server.require_tool("llama-server")
    assert fixtures_server.require_module("json", "stdlib").dumps([]) == "[]"


def test_no_test_skips_a_missing_prerequisite_past_ci() -> None:
    """``importorskip`` and a ``skipif`` on a missing tool skip silently on CI too: use
    ``tests.fixtures_server.require*`` (skip locally, fail on CI) instead."""
    offenders = [f"{path.name}:{number}" for path in sorted(Path(__file__).parent.glob("*.py"))
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if "importorskip(" in line and path.name != Path(__file__).name
                 or re.search(r"skipif\(\s*tool_path\(", line)]
    assert offenders == []
