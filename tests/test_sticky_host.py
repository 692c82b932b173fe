"""A cell stays on one server across its rounds and on resume, so its mean never mixes two machines.

``python -m sweep -m +experiment=quickstart`` (baseline + chimera cells: random order, run in rounds of
Hydra jobs) under the joblib launcher against two recording stand-ins on 127.0.0.1.  Every round is a new
job that leases a free server; without stickiness a cell's rounds land on whichever server is free, and
with two different GPUs behind the two addresses its mean and CI would pool two machines.  Judged from the
stored Parquet (``base_url``), and from the report a reader sees when a cell's rows do span servers.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd

from sweep.testing.standin import Script, StandIn
from sweep.backends.hosts import alternate
from sweep.running import lease_host
from tests.sweep_cli import only_sweep, run_module, run_sweep, trials_of

JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")


def _standins() -> tuple[StandIn, StandIn]:
    """Two servers whose calls take ~0.2 s, so two workers' jobs overlap and both servers get cells."""
    servers = StandIn(models=("gemma3:latest",)), StandIn(models=("gemma3:latest",))
    for server in servers:
        server.default = Script(first_token_delay_s=0.02, token_interval_s=0.02)
    return servers


def _args(hosts: list[StandIn], root: Path, *extra: str, launcher: tuple[str, ...] = JOBLIB) -> list[str]:
    listed = ",".join(f'"{h.base_url}"' for h in hosts)
    return ["-m", "+experiment=quickstart", *launcher, "grid.fixed.num_predict=8", "backend=ollama",
            f"backend.hosts=[{listed}]", "model=gemma3", "telemetry.enabled=false", "progress=false", "warmup=0",
            "sweep_id=s", f"output_root={root}", *extra]


def _servers_per_cell(df: pd.DataFrame) -> pd.Series:
    return df.groupby("cell_id")["base_url"].unique().map(sorted)


def _assert_one_server_at_a_time(df: pd.DataFrame) -> None:
    """Calls of two different cells never overlap on one server (the leases still hold)."""
    end = df["started_at"] + pd.to_timedelta(df["e2e_ms"], unit="ms")
    for i, row in df.iterrows():
        same_host_other_cell = (df["base_url"] == row["base_url"]) & (df["cell_hash"] != row["cell_hash"])
        overlap = (df["started_at"] < end[i]) & (row["started_at"] < end) & same_host_other_cell
        assert not overlap.any(), df.loc[overlap | (df.index == i), ["cell_id", "base_url", "started_at", "e2e_ms"]]


def test_every_cell_of_a_parallel_random_multirun_keeps_one_server_across_its_rounds(tmp_path: Path) -> None:
    a, b = _standins()
    with a, b:
        result = run_sweep(*_args([a, b], tmp_path, "trials=4"), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "5 cell(s) in 5 job(s) × 4 round(s) = 20 job(s), 2 at once, order=random" in result.stderr
    df = trials_of(tmp_path)
    assert len(df) == 20 and df["status"].eq("ok").all()
    assert sorted(df.groupby("cell_id")["trial"].apply(sorted).map(tuple)) == [(0, 1, 2, 3)] * 5
    servers = _servers_per_cell(df)
    assert servers.map(len).eq(1).all(), servers                        # one server per cell, every round
    assert set(df["base_url"]) == {a.base_url, b.base_url}             # and both servers measured
    assert len(a.requests) + len(b.requests) == 20
    _assert_one_server_at_a_time(df)
    assert "span" not in result.stderr                                  # nothing to say when every cell stayed


def test_a_resumed_cell_goes_back_to_the_server_its_stored_rows_came_from(tmp_path: Path) -> None:
    """Resumed one job at a time (the basic launcher), "first free server" would put every cell on the first."""
    a, b = _standins()
    with a, b:
        first = run_sweep(*_args([a, b], tmp_path, "trials=2"), timeout=300)
        assert first.returncode == 0, first.stderr
        homes = _servers_per_cell(trials_of(tmp_path))
        assert homes.map(len).eq(1).all() and {h[0] for h in homes} == {a.base_url, b.base_url}, homes
        resumed = run_sweep(*_args([a, b], tmp_path, "trials=4", "resume=true", launcher=()), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "= 10 job(s) left (10 stored)" in resumed.stderr
    df = trials_of(tmp_path)
    assert sorted(df.groupby("cell_id")["trial"].apply(sorted).map(tuple)) == [(0, 1, 2, 3)] * 5
    assert _servers_per_cell(df).to_dict() == homes.to_dict()          # rounds 2 and 3 where 0 and 1 ran
    _assert_one_server_at_a_time(df)


def test_a_cell_leases_its_own_server_waits_while_it_is_busy_and_moves_only_after_the_bound(tmp_path: Path) -> None:
    """Real locks between two leases: the preferred server is waited for, never swapped for a free one early."""
    hosts = ["http://h1", "http://h2"]
    with lease_host(tmp_path, hosts, prefer="http://h2") as home:
        assert home == "http://h2"                                      # preferred though h1 is free
        started = time.monotonic()
        with lease_host(tmp_path, hosts, prefer="http://h2", wait_s=0.5) as moved:
            waited = time.monotonic() - started
        assert moved == "http://h1" and waited >= 0.5                   # only once the bound has passed
    with lease_host(tmp_path, hosts, prefer="http://h1") as first:
        done = threading.Event()
        got: list[str] = []

        def lease() -> None:
            with lease_host(tmp_path, hosts, prefer="http://h1", wait_s=30, poll_s=0.01) as host:
                got.append(host)
            done.set()

        waiter = threading.Thread(target=lease)
        waiter.start()
        assert not done.wait(0.5) and first == "http://h1"            # h2 is free, yet it waits for h1
    waiter.join(30)
    assert got == ["http://h1"]                                         # and takes h1 once it is let go
    with lease_host(tmp_path, hosts, prefer="http://gone") as elsewhere:
        assert elsewhere == "http://h1"                                 # a server not listed: any free one


def test_the_report_and_summary_flag_a_cell_whose_rows_span_servers(tmp_path: Path) -> None:
    """The same cells measured on one server, then resumed against another: one label, two machines."""
    a, b = _standins()
    with a, b:
        on_a = run_sweep(*_args([a], tmp_path, "trials=2", launcher=()), timeout=300)
        assert on_a.returncode == 0, on_a.stderr
        on_b = run_sweep(*_args([b], tmp_path, "trials=4", "resume=true", launcher=()), timeout=300)
        assert on_b.returncode == 0, on_b.stderr
    df = trials_of(tmp_path)
    assert _servers_per_cell(df).map(len).eq(2).all()
    report = run_module("analysis", str(only_sweep(tmp_path)), "--no-figures", timeout=300)
    assert report.returncode == 0, report.stderr
    (flag,) = [line for line in report.stdout.splitlines() if "rows span servers" in line]
    assert flag.startswith("warning: 5 cell(s) whose rows span servers") and "… 2 more" in flag, flag
    text = (only_sweep(tmp_path) / "_report" / "report.md").read_text()
    (fact,) = [line for line in text.splitlines() if "rows span servers" in line]
    both = ", ".join(sorted([a.base_url, b.base_url]))
    assert fact.startswith("- **Warning**: 5 cell(s)") and fact.count(f"({both})") == 5, fact


def test_a_rounds_jobs_take_the_servers_in_turn_each_server_keeping_the_rounds_order() -> None:
    """Side by side, two jobs of one server make a worker wait while the other server idles."""
    jobs = [("c1", "A"), ("c2", "A"), ("c3", "A"), ("c4", "B"), ("c5", "B"), ("c6", None)]
    order = alternate(jobs, lambda job: job[1])
    assert [name for name, _ in order] == ["c1", "c4", "c6", "c2", "c5", "c3"]
    assert alternate(jobs[:3], lambda job: job[1]) == jobs[:3]          # one server: the round's order as is
