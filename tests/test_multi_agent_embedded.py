"""A real 2-agent sweep on two embedded engines (``backend.instances=2``, gemma3:270m), then ``python -m analysis``.

Kept small (16 tokens per call, one concurrent and one isolated run per agent,
one thread per engine): the point is the whole path on the real engine, the
two servers on their own ports and the report's concurrency table, not a figure.
"""

from __future__ import annotations

import csv
import re
import signal

import httpx
import pandas as pd
import pytest

from tests.sweep_cli import only_sweep, run_sweep
from tests.test_reliability import _start_sweep, _wait_for_rows
from tests.test_sweep_embedded import run_analysis

pytest_plugins = ["tests.fixtures_server"]
pytestmark = pytest.mark.timeout(400)


@pytest.fixture(autouse=True)
def _engine_installed(embedded_server) -> None:
    """Skips (like the other server tests) when llama-cpp-python is missing."""


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/api/version", timeout=2)
        return True
    except httpx.HTTPError:
        return False


def test_two_agents_on_two_embedded_instances_then_analysis(tmp_path) -> None:
    result = run_sweep("workload=multi_agent", "agents.count=2", "backend.instances=2", "model=gemma3_270m",
                       "chimera.num_thread=1", "chimera.num_predict=16", "trials=1", "warmup=1",
                       "telemetry.enabled=false", f"output_root={tmp_path}", timeout=360)
    assert result.returncode == 0, result.stderr
    sweep_dir = only_sweep(tmp_path)
    df = pd.read_parquet(sweep_dir)
    assert not any(_answers(u) for u in df["base_url"].unique()), "every embedded instance is stopped at the end"
    assert df["status"].eq("ok").all(), df[["status", "error"]].to_string()
    assert df["base_url"].nunique() == 2                       # one server per agent, each on its own port
    assert df.groupby("agent_id")["base_url"].nunique().eq(1).all()
    # a sampled model may stop at once (EOS first, eval_count 0, still status ok): bounded, and text overall
    assert df["eval_count"].between(0, 16).all() and df["eval_count"].sum() > 0
    assert df["response"].str.len().gt(0).any()
    report = run_analysis(sweep_dir)
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader((sweep_dir / "_report" / "concurrency.csv").open()))
    assert len(rows) == 1 and rows[0]["agents"] == "2" and rows[0]["runs"] == "1"
    assert float(rows[0]["speedup mean"]) > 0 and float(rows[0]["tr114 speedup mean"]) > 0
    md = (sweep_dir / "_report" / "report.md").read_text()
    assert re.search(r"^## \d+\. Concurrency$", md, re.M) and re.search(r"^## \d+\. Agent workflows$", md, re.M)


def test_ctrl_c_stops_every_embedded_instance(tmp_path) -> None:
    proc = _start_sweep("workload=multi_agent", "agents.count=2", "agents.workflow=prompt", "backend.instances=2",
                        "model=gemma3_270m", "chimera.num_thread=1", "chimera.num_predict=16", "trials=50",
                        "warmup=1", "telemetry.enabled=false", f"output_root={tmp_path}")
    rows = _wait_for_rows(tmp_path, 2, timeout_s=180)          # the warm-up run is stored: both servers are up
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 130, stderr
    urls = set(pd.read_parquet(only_sweep(tmp_path))["base_url"]) | set(rows["base_url"])
    assert len(urls) == 2 and not any(_answers(u) for u in urls)
