"""``backend.parallel``: a load-time setting of the servers the sweep starts, stored as ``server_parallel``.

The fast tests check the plan (cell identity, reload grouping, refusals for servers the sweep does not
start); the slow one runs a real two-job multirun on the embedded engine with ``backend.parallel=1,2``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.cells import ConfigError, load_key
from sweep.config import typed
from sweep.plan import count_loads, plan_cells, reload_order
from tests.cells import make_cell
from tests.fixtures_server import require_engine
from tests.sweep_cli import only_sweep, run_sweep, trials_of


def test_cells_without_parallel_keep_their_hash_and_label() -> None:
    """Older sweeps resume: a cell that does not set backend.parallel hashes as before the key existed."""
    cell = make_cell(num_ctx=512)
    assert cell.parallel is None
    assert cell.cell_hash == "f01a4d40c6a58f93"   # its hash before backend.parallel existed (computed then)
    assert "parallel" not in cell.cell_id


def test_parallel_is_part_of_the_cell_and_its_label() -> None:
    one, two = (dataclasses.replace(make_cell(num_ctx=512), parallel=n) for n in (1, 2))
    assert len({make_cell(num_ctx=512).cell_hash, one.cell_hash, two.cell_hash}) == 3
    assert one.cell_id.endswith("parallel=1") and two.cell_id.endswith("parallel=2")


def test_reload_order_groups_slots_before_models() -> None:
    """A change of slots restarts the whole server: all cells of one slot count run together, every model."""
    cells = [dataclasses.replace(make_cell(model, num_ctx=ctx), backend="embedded", parallel=n)
             for n in (1, 2) for model in ("a:1", "b:1") for ctx in (256, 512)]
    typed = [cells[i] for i in (0, 4, 1, 5, 2, 6, 3, 7)]          # slots alternating: every cell a restart
    ordered = reload_order(typed, load_key)
    assert [c.parallel for c in ordered] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert count_loads([load_key(c) for c in typed]) == 8 and count_loads([load_key(c) for c in ordered]) == 8
    assert load_key(ordered[0])[:3] == ("embedded", (1, 1), "a:1")


def test_plan_carries_backend_parallel(compose_cfg) -> None:
    (cell,) = plan_cells(typed(compose_cfg("backend.parallel=2")))
    assert cell.parallel == 2 and cell.cell_id.endswith("parallel=2")
    (unset,) = plan_cells(typed(compose_cfg()))
    assert unset.parallel is None and unset.cell_hash != cell.cell_hash


@pytest.mark.parametrize("override, fragment", [
    ("backend.parallel=0", "invalid backend.parallel=0: a whole number >= 1"),
])
def test_bad_parallel_is_refused(compose_cfg, override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        plan_cells(typed(compose_cfg(override)))


@pytest.mark.parametrize("backend, fix", [
    ("ollama", "set OLLAMA_NUM_PARALLEL=N where `ollama serve` runs"),
    ("openai", "set it where the server starts (llama-server -np N, vLLM --max-num-seqs N)"),
])
def test_running_servers_refuse_parallel_naming_the_fix(compose_cfg, backend: str, fix: str) -> None:
    """The sweep cannot set a running server's slots: parallel=1,2 would measure one server under two labels."""
    with pytest.raises(ConfigError) as err:
        plan_cells(typed(compose_cfg(f"backend={backend}", "chimera=baseline", "backend.parallel=2")))
    message = str(err.value)
    assert f"backend.parallel=2 cannot be set by the sweep on backend={backend}" in message
    assert fix in message and "\n" not in message


def test_local_ollama_slots_come_from_its_environment() -> None:
    """A local Ollama's OLLAMA_NUM_PARALLEL is read from its process environment (/proc/PID/environ).

    Two stand-in processes: one started with the variable, one without (Ollama then picks by itself: null).
    """
    from sweep.backends.processes import ollama_env_slots

    env = {k: v for k, v in os.environ.items() if k != "OLLAMA_NUM_PARALLEL"}
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=e)
                for e in ({**env, "OLLAMA_NUM_PARALLEL": "4"}, env)]
    try:
        with_var, without = (ollama_env_slots(c.pid) for c in children)
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert with_var == (4, f"OLLAMA_NUM_PARALLEL in the environment of ollama pid {children[0].pid}")
    assert without[0] is None and "unset" in without[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_embedded_sweep_over_parallel_restarts_and_stores_slots(tmp_path: Path) -> None:
    require_engine()
    result = run_sweep("-m", "backend.parallel=1,2", f"output_root={tmp_path}", "trials=1", "warmup=0",
                       "chimera.num_predict=4", "progress=false", "telemetry.enabled=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "embedded engine restarted with --parallel 2 (was 1)" in result.stderr
    df = trials_of(tmp_path)
    assert sorted(df.groupby("server_parallel")["cell_hash"].nunique().items()) == [(1, 1), (2, 1)]
    assert set(df[df.server_parallel == 2].cell_id.str.endswith("parallel=2")) == {True}
    run = json.loads((only_sweep(tmp_path) / "_run.json").read_text())
    assert run["server"]["parallel_source"] == "--parallel"
    configs = {c["config"]["backend"]["parallel"] for c in run["cells"].values()}
    assert configs == {1, 2}
    from analysis.load import load   # the report's cell labels name the slots, as the options they vary

    assert set(load([only_sweep(tmp_path)]).frame["cell"]) == {"chimera parallel=1", "chimera parallel=2"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_llama_server_sweep_passes_np_and_stores_slots(tmp_path: Path) -> None:
    """backend=llama_server backend.parallel=2: started with -np 2 and -c 2 × num_ctx; the rows say 2."""
    from tests.fixtures_server import require_tool

    require_tool("llama-server")
    result = run_sweep("backend=llama_server", "backend.parallel=2", "chimera.num_ctx=512", "chimera.num_thread=1",
                       "chimera.num_predict=4", f"output_root={tmp_path}", "trials=1", "warmup=0", "progress=false",
                       "telemetry.enabled=false")
    assert result.returncode == 0, result.stderr[-3000:]
    (flags,) = re.findall(r"llama-server started: pid \d+, port \d+, flags (.*) \(model", result.stderr)
    assert "-c 1024 " in flags and flags.endswith("-np 2"), flags
    df = trials_of(tmp_path)
    assert list(df.server_parallel) == [2] and df.cell_id.iloc[0].endswith("parallel=2")
