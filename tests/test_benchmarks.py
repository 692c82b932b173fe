"""``python -m benchmarks`` at tiny sizes: every benchmark runs the real path and writes results.json.

Not a speed test (that is what the benchmarks themselves are for): the figures
must exist, be finite and be plausible in kind (a rate is positive, an error
is a small non-negative percentage), and the table names every headline figure.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import fidelity
from benchmarks.__main__ import GOALS
from tests.fixtures_server import ON_CI

ROOT = Path(__file__).resolve().parent.parent


def test_tiny_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks", "parse", "fidelity", "concurrency", "cells",
                             "analysis", "--tiny", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in ("parse_chunks_per_s", "fidelity_err_pct_5000", "fidelity_err_pct_500", "ttft_err_ms_p99",
                "concurrency_err_pct", "cell_overhead_ms", "analysis_10000_rows_s"):
        assert isinstance(figures[key], float) and math.isfinite(figures[key]), key
    assert figures["parse_chunks_per_s"] > 100
    assert 0 <= figures["fidelity_err_pct_500"] < 50 and 0 <= figures["concurrency_err_pct"] < 50
    assert figures["cell_overhead_ms"] > 0 and figures["analysis_10000_rows_s"] > 0
    assert figures["meta"]["size"] == "tiny" and "--tiny" in figures["meta"]["command"]
    table = result.stdout[result.stdout.index("figure "):]
    for key in ("parse_chunks_per_s", "fidelity_err_pct_5000", "ttft_err_ms_p99", "concurrency_err_pct",
                "cell_overhead_ms"):
        assert key in table and GOALS[key].unit in table


@pytest.mark.exclusive   # tok/s within 5 % of the server's send times
def test_fidelity_against_the_servers_own_send_times() -> None:
    """A 100 tok/s stream: our client tok/s and ITL within a few % of the server's actual send times."""
    f = fidelity.fidelity(100, tokens=30, reps=2)
    assert 0 <= f["err_pct"] < 5
    assert 0 <= f["ttft_err_ms_p99"] < 100


def test_unknown_benchmark_is_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "benchmarks", "nope"], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown benchmark nope: choose from parse")


@pytest.mark.parametrize("value, met", [(0.5, True), (1.5, False)])
def test_goals_read_the_right_way(value: float, met: bool) -> None:
    assert GOALS["fidelity_err_pct_500"].met(value) is met
    assert GOALS["parse_chunks_per_s"].met(60_000.0) is True and GOALS["parse_chunks_per_s"].met(1.0) is False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread CPU needs Linux's /proc")
@pytest.mark.skipif(shutil.which("curl") is None and not ON_CI,   # on CI: run, and fail
                    reason="curl not installed: run `make test-packages`")
@pytest.mark.slow   # ~6 s: a real embedded server streams to our client and to curl
@pytest.mark.exclusive   # the real engine, and CPU per token
def test_cpu_meter_gives_per_token_cpu_of_the_servers_event_loop_and_our_client_and_curl_measures_the_same_call() -> None:
    from benchmarks import anchor, engine
    from sweep.server import start

    with start() as server:
        meter = engine.CpuMeter(server.pid)
        cell = lambda tokens: engine.Cell("bench", "smollm2:135m", "embedded", server.base_url,  # noqa: E731
                                          engine.options_for(1, tokens), "engine-bench",
                                          (engine.Prompt("0", engine.PROMPT),), None, "generate", None)
        records = anchor.run_trials(server.base_url, engine.OLLAMA, cell, 4, 48, 3, meter)
        curl = engine.curl_trials(server.base_url, cell(48), 2)
    runs = meter.per_token([engine._run_of(r) for r in records])
    assert [r.tokens for r in runs] == [48] * 3                  # the prompt runs past the limit on greedy decoding
    assert set(meter.spans) == {"one", "all"}
    for run in runs:
        # every streamed line costs our runner some CPU, far less than a request; the server's event loop does
        # next to nothing per token (the worker writes them), so its slope is a small number either side of 0
        assert 0 < run.client_us_per_token < 20_000, run
        assert math.isfinite(run.loop_us_per_token) and abs(run.loop_us_per_token) < 20_000, run
    # the same call with curl as the client: the server's own figures, all tokens
    assert [r.tokens for r in curl] == [48, 48] and all(r.server_tok_s > 0 for r in curl)
