"""Every wrong input to ``python -m sweep`` is one line on stderr, exit code 2, and no request sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.testing.standin import StandIn
from tests.sweep_cli import run_sweep

CASES = [
    (["chimera=fast"], "error: unknown chimera=fast: choose one of baseline, optimized"),
    (["+experiment=nope"], "error: unknown experiment=nope: choose one of pp_tg, quickstart, tr111"),
    (["hydra/launcher=nope"], "error: unknown hydra.launcher=nope: choose one of basic, joblib"),
    (["chimera.num_ctx=abc"], "error: invalid chimera.num_ctx='abc': must be an integer"),
    (["chimera.temperature=hot"], "error: invalid chimera.temperature='hot': must be a number"),
    (["resume=maybe"], "error: invalid resume='maybe': must be true or false"),
    (["chimera.num_ctxx=512"], "error: unknown key chimera.num_ctxx: valid keys there are preset, num_gpu, num_ctx"),
    (["trials=["], "error: cannot parse the override 'trials=[': "),
    (["chimera.num_ctx=512,abc", "-m"], "error: invalid chimera.num_ctx='abc': must be an integer"),
    (["-m", "trials=2,0"], "error: invalid trials=0: must be >= 1"),
    (["trials=-1"], "error: invalid trials=-1: must be >= 1"),
    (["chimera.top_p=2"], "error: invalid option top_p=2.0: must be between 0 and 1"),
    # choice keys are enums of the schema (sweep/config.py): a typo is Hydra's error, before anything starts
    (["backend.kind=embeded"], "error: invalid backend.kind='embeded': choose one of embedded, llama_server, ollama, "
                               "openai"),
    (["order=randm"], "error: invalid order='randm': choose one of blocked, interleaved, random"),
    (["workload.endpoint=embeddings"], "error: invalid workload.endpoint='embeddings': choose one of generate, chat, "
                                       "completions"),
    (["objective.stat=max"], "error: invalid objective.stat='max': choose one of mean, median, p95"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_wrong_input_is_one_line_exit_2_and_sends_nothing(standin: StandIn, tmp_path: Path,
                                                          args: list[str], message: str) -> None:
    result = run_sweep("backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
                       f"output_root={tmp_path}", *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    assert standin.hits == []


def test_hydra_full_error_still_shows_hydras_own_report(standin: StandIn, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    result = run_sweep("backend=ollama", f"backend.base_url={standin.base_url}", f"output_root={tmp_path}",
                       "chimera=fast")     # (model=nope is a model name: tests/test_ollama_habits.py)
    assert result.returncode != 0 and "Traceback" in result.stderr and "Available options in 'chimera'" in result.stderr
