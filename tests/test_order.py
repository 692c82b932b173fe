"""Reload-aware cell order: grouped by server, model and load-time options, whatever order was typed."""

from __future__ import annotations

from dataclasses import replace
from itertools import groupby
from pathlib import Path

from sweep.cells import load_key
from sweep.config import typed
from sweep.plan import count_loads, plan_cells, reload_order
from sweep.testing.standin import StandIn
from tests.sweep_cli import run_sweep


def _loads_seen(requests: list[dict]) -> int:
    """How often the (model, num_ctx) a server received changed: what a real engine reloads for."""
    return len(list(groupby((r["model"], r["options"]["num_ctx"]) for r in requests)))


def test_model_x_num_ctx_x_temperature_runs_in_four_loads_whatever_the_typed_order(
        standin: StandIn, tmp_path: Path) -> None:
    common = ["-m", "backend=ollama", f"backend.base_url={standin.base_url}", "trials=1", "warmup=0"]
    typed = ["chimera.temperature=0.6,0.8", "chimera.num_ctx=1024,256", "model=llama3_1_8b_q4,gemma3"]
    result = run_sweep(*common, *typed, f"output_root={tmp_path / 'a'}")
    assert result.returncode == 0, result.stderr
    assert "plan: 8 cell(s) in 8 job(s), 4 model load(s) (reload_aware order; as typed: 8)" in result.stderr
    first = [(r["model"], r["options"]["num_ctx"], r["options"]["temperature"]) for r in standin.requests]
    assert _loads_seen(standin.requests) == 4 and len(first) == 8
    assert [m for m, _, _ in first[:4]] == ["gemma3:latest"] * 4
    assert [c for _, c, _ in first[:4]] == [256, 256, 1024, 1024]

    standin.requests.clear()
    result = run_sweep(*common, *reversed(typed), f"output_root={tmp_path / 'b'}")
    assert result.returncode == 0, result.stderr
    assert "4 model load(s) (reload_aware order; as typed: 4)" in result.stderr
    assert [(r["model"], r["options"]["num_ctx"]) for r in standin.requests] == [(m, c) for m, c, _ in first]

    standin.requests.clear()
    result = run_sweep(*common, *typed, "hydra.sweeper.order=typed", f"output_root={tmp_path / 'c'}")
    assert result.returncode == 0, result.stderr
    assert "8 model load(s) (typed order; as typed: 8)" in result.stderr
    assert _loads_seen(standin.requests) == 8


def test_cells_in_one_job_are_grouped_by_load_time_options(compose_cfg) -> None:
    """A grid typed temperature-major (as an experiment's axes may be) needs 5 loads; grouped, 3."""
    base = plan_cells(typed(compose_cfg("chimera=baseline")))[0]
    as_typed = [base] + [replace(base, preset="chimera", options={"num_ctx": c, "temperature": t})
                         for t in (0.6, 0.8) for c in (512, 2048)]
    assert count_loads([load_key(c) for c in as_typed]) == 5
    ordered = reload_order(as_typed, load_key)
    assert [c.options.get("num_ctx") for c in ordered] == [None, 512, 512, 2048, 2048]
    assert [c.options.get("temperature") for c in ordered[1:]] == [0.6, 0.8, 0.6, 0.8]   # typed order kept
    assert count_loads([load_key(c) for c in ordered]) == 3


def test_cells_on_different_servers_do_not_evict_each_other() -> None:
    a = ("http://a:1", "m", (1, 512))
    b = ("http://b:1", "m", (1, 2048))
    assert count_loads([a, b, a, b]) == 2
    assert count_loads([a, a, (a[0], "m", (1, 1024)), a]) == 3
