"""workload=load's configuration: the cell it plans, and one clear line for each mistake."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from omegaconf import DictConfig

from sweep.cells import ConfigError
from sweep.config import typed
from sweep.plan import plan_cells
from tests.fixtures_standin import compose_cfg  # noqa: F401 - fixture
from tests.sweep_cli import run_sweep

Compose = Callable[..., DictConfig]
BASE = ("workload=load", "backend=ollama", "backend.base_url=http://127.0.0.1:9", "model=gemma3")


def test_a_load_cell_carries_its_plan_in_its_hash_and_label(compose_cfg: Compose) -> None:
    (cell,) = plan_cells(typed(compose_cfg(*BASE, "load.rate=2", "slo.ttft_ms=500")))
    plan = cell.load_plan
    assert plan is not None and (plan.loop, plan.level, plan.arrivals, plan.sweep) == ("open", 2.0, "constant", False)
    assert cell.cell_id.startswith("load open-loop rate=2/s constant 10 s slo ttft_ms<=500 fraction>=0.9 ")
    (other,) = plan_cells(typed(compose_cfg(*BASE, "load.rate=3", "slo.ttft_ms=500")))
    assert other.cell_hash != cell.cell_hash
    (closed,) = plan_cells(typed(compose_cfg(*BASE, "load.concurrency=4", "load.requests=20")))
    assert closed.load_plan is not None and (closed.load_plan.loop, closed.load_plan.level) == ("closed", 4.0)
    (knee,) = plan_cells(typed(compose_cfg(*BASE, "load.rates=sweep", "slo.e2e_ms=900")))
    assert knee.load_plan is not None and (knee.load_plan.low, knee.load_plan.high) == (0.5, 64.0)
    # a search judges every level on 20 requests (10 s at 0.5 req/s would be 5), unless a length is given
    assert (knee.load_plan.requests, knee.load_plan.duration_s) == (20, None)
    assert "20 requests" in knee.cell_id or "20 req" in knee.cell_id, knee.cell_id
    (timed,) = plan_cells(typed(compose_cfg(*BASE, "load.rates=sweep", "slo.e2e_ms=900", "load.duration_s=30")))
    assert timed.load_plan is not None and (timed.load_plan.requests, timed.load_plan.duration_s) == (None, 30)
    assert (plan.requests, plan.duration_s) == (None, 10.0)   # a fixed rate: 10 s, as before
    (prompt,) = plan_cells(typed(compose_cfg("backend=ollama", "backend.base_url=http://127.0.0.1:9", "model=gemma3")))
    assert prompt.load_plan is None


@pytest.mark.parametrize("overrides, message", [
    ((), "workload=load needs load.rate=R"),
    (("load.rate=2", "load.concurrency=3"), "load.rate and load.concurrency are both set"),
    (("load.rates=sweep",), "load.rates=sweep needs an SLO"),
    (("load.rates=sweep", "load.rate=1", "slo.ttft_ms=500"), "load.rates=sweep searches the level itself"),
    (("load.rate=0",), "invalid load.rate=0.0: must be > 0"),
    (("load.concurrency=0",), "invalid load.concurrency=0"),
    (("load.rate=2", "load.duration_s=5", "load.requests=10"), "both set"),
    (("load.rate=2", "trials=auto"), "trials=auto is not supported by workload=load"),
    (("load.rate=2", "slo.fraction=1.5"), "invalid slo.fraction=1.5"),
    (("load.rates=sweep", "slo.ttft_ms=500", "load.low=8", "load.high=4"), "need 0 < low <= high"),
    (("load.rates=sweep", "slo.ttft_ms=500", "load.loop=closed", "load.low=1.5"), "whole numbers"),
    (("load.loop=open", "load.concurrency=2"), "load.loop=open does not use load.concurrency"),
])
def test_mistakes_are_one_line(compose_cfg: Compose, overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        plan_cells(typed(compose_cfg(*BASE, *overrides)))


def test_the_cli_refuses_a_load_without_a_level_before_any_request() -> None:
    result = run_sweep(*BASE, "telemetry.enabled=false")
    assert result.returncode != 0
    assert "workload=load needs load.rate=R" in result.stderr and "Traceback" not in result.stderr
