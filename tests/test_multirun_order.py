"""order= in a multirun (one cell per Hydra job): the sweeper runs the trials in rounds of jobs.

``python -m sweep -m +experiment=quickstart`` against the stand-in, which records every request: the
request sequence the server saw is the order that ran.  Default for baseline + chimera cells: random,
a fresh permutation of the cells every round from ``order_seed`` (drawn and recorded when not given);
``interleaved`` alternates; ``blocked`` is the old one-job-per-cell sequence.  Between rounds the
sweeper reads the stored rows: a resume sends nothing for stored rounds, ``trials=auto`` drops cells.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest

from sweep.order import round_order
from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import only_sweep, run_sweep, trials_of

# The quickstart grid's cells as (num_ctx, num_thread), in the sweeper's reload-aware job order.
GRID = [(None, None), (512, 1), (512, 2), (2048, 1), (2048, 2)]


def args(standin: StandIn, root: Path, *extra: str) -> list[str]:
    return ["-m", "+experiment=quickstart", "grid.fixed.num_predict=8", "backend=ollama",
            f"backend.base_url={standin.base_url}", "model=gemma3", "telemetry.enabled=false", "progress=false",
            "backend.retry_backoff_s=0", f"output_root={root}", *extra]


def _fast(standin: StandIn) -> None:
    standin.default = Script(tokens=["a", "b", "c"], first_token_delay_s=0.002, token_interval_s=0.001)


def _key(options: dict) -> tuple:
    return options.get("num_ctx"), options.get("num_thread")


def _row_key(row: pd.Series) -> tuple:
    return tuple(None if pd.isna(row[k]) else int(row[k]) for k in ("num_ctx", "num_thread"))


def _sequence(standin: StandIn) -> list[tuple]:
    """(num_ctx, num_thread) of every streamed request the server received, in arrival order."""
    return [_key(r.get("options", {})) for r in standin.requests]


def _rows(root: Path) -> pd.DataFrame:
    return trials_of(root).sort_values("started_at").reset_index(drop=True)


def _seed(root: Path) -> int:
    configs = [c["config"] for c in json.loads((only_sweep(root) / "_run.json").read_text())["cells"].values()]
    assert {c["order"] for c in configs} == {"random"}
    (seed,) = {c["order_seed"] for c in configs}
    return seed


def test_a_baseline_vs_chimera_multirun_runs_in_permuted_reproducible_rounds_by_default(
        standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)
    first = run_sweep(*args(standin, tmp_path / "a", "trials=3", "warmup=1"))        # no order=, no seed
    assert first.returncode == 0, first.stderr
    assert "5 cell(s) in 5 job(s) × 3 round(s) = 15 job(s), order=random (order_seed=" in first.stderr
    seed = _seed(tmp_path / "a")                                   # drawn, and recorded in the provenance
    sequence = _sequence(standin)
    df = _rows(tmp_path / "a")
    measured = df[~df["warmup"]]
    # Round by round, every cell once, in the permutation the seed draws for that round.
    expected = [GRID[i] for r in range(3) for i in round_order(range(5), "random", seed, r)]
    assert [_row_key(r) for _, r in measured.iterrows()] == expected
    assert measured["round"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert measured["trial"].tolist() == measured["round"].tolist()
    assert any(expected[5 * r:5 * r + 5] != GRID for r in range(3))          # permuted, not the job order
    # Every trial follows a request with its own options: a warm-up whenever the previous visit loaded others.
    keys = [_row_key(r) for _, r in df.iterrows()]
    assert all(i > 0 and keys[i - 1] == keys[i] for i in measured.index)
    reloads = sum(1 for j, k in enumerate(expected) if j == 0 or expected[j - 1] != k)
    assert int(df["warmup"].sum()) == reloads and not measured["reloaded"].any()

    standin.requests.clear()
    again = run_sweep(*args(standin, tmp_path / "b", "trials=3", "warmup=1", f"order_seed={seed}"))
    assert again.returncode == 0, again.stderr
    assert _sequence(standin) == sequence                          # the same seed: the same requests
    assert _seed(tmp_path / "b") == seed

    standin.requests.clear()
    other = run_sweep(*args(standin, tmp_path / "c", "trials=3", "warmup=1", f"order_seed={seed + 1}"))
    assert other.returncode == 0, other.stderr
    assert _sequence(standin) != sequence


def test_interleaved_multirun_alternates_the_cells_with_a_warm_up_per_reload(standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)
    result = run_sweep(*args(standin, tmp_path, "order=interleaved", "trials=3", "warmup=1"))
    assert result.returncode == 0, result.stderr
    assert "order=interleaved: cells alternate" in result.stderr
    assert _sequence(standin) == [x for x in GRID for _ in range(2)] * 3    # A A' B B' … (warm-up, trial)
    df = _rows(tmp_path)
    measured = df[~df["warmup"]]
    assert measured["round"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert not measured["reloaded"].any()                          # each warm-up took its visit's reload
    assert "interleaved order: 10 extra warm-up(s) after reloads between cells" in result.stderr


def test_blocked_multirun_is_one_job_per_cell_as_before(standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)
    result = run_sweep(*args(standin, tmp_path, "order=blocked", "trials=2", "warmup=1"))
    assert result.returncode == 0, result.stderr
    assert "plan: 5 cell(s) in 5 job(s), 5 model load(s) (reload_aware order; as typed: 5)" in result.stderr
    assert _sequence(standin) == [x for x in GRID for _ in range(3)]
    assert "extra warm-up" not in result.stderr


def test_resume_of_a_random_multirun_sends_nothing_and_runs_only_missing_rounds(
        standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)
    run = args(standin, tmp_path, "order_seed=11", "warmup=1", "sweep_id=s")
    assert run_sweep(*run, "trials=2").returncode == 0
    hits = len(standin.hits)
    complete = run_sweep(*run, "trials=2", "resume=true")
    assert complete.returncode == 0, complete.stderr
    assert len(standin.hits) == hits                               # not even a version check: no job ran
    assert "= 0 job(s) left (10 stored)" in complete.stderr

    standin.requests.clear()
    more = run_sweep(*run, "trials=3", "resume=true")              # round 2 is missing for every cell
    assert more.returncode == 0, more.stderr
    # Rounds 0 and 1 are stored: only round 2 runs, in its order, each visit after a warm-up (a new process).
    assert _sequence(standin) == [GRID[i] for i in round_order(range(5), "random", 11, 2) for _ in range(2)]
    df = trials_of(tmp_path)
    measured = df[~df["warmup"] & (df["status"] == "ok")]
    assert sorted(measured.groupby("cell_hash")["trial"].apply(sorted).map(tuple)) == [(0, 1, 2)] * 5


def test_trials_auto_in_a_multirun_gives_rounds_only_to_cells_not_yet_precise(standin: StandIn, tmp_path: Path) -> None:
    rng = random.Random(5)

    def script(body: dict) -> Script:   # the baseline (no num_ctx) is noisy, the chimera cells steady
        noisy = (body.get("options") or {}).get("num_ctx") is None
        duration = int(rng.uniform(0.5, 1.5) * 4e8) if noisy else 400_000_000
        return Script(tokens=["a", "b", "c"], first_token_delay_s=0.002, token_interval_s=0.001,
                      eval_duration=duration)

    standin.script_for = script
    result = run_sweep(*args(standin, tmp_path, "order_seed=3", "trials=auto", "auto.min_trials=3",
                             "auto.max_trials=5", "warmup=1"))
    assert result.returncode == 0, result.stderr
    assert "× up to 5 round(s)" in result.stderr
    df = _rows(tmp_path)
    measured = df[~df["warmup"]]
    counts = measured.groupby("preset")["trial"].count().to_dict()
    assert counts == {"baseline": 5, "chimera": 4 * 3}              # steady cells left after 3 rounds
    assert measured[measured["round"] >= 3]["preset"].eq("baseline").all()
    last = measured.groupby("cell_hash").tail(1)                   # the stored reason is on each cell's last row
    assert last.loc[last["preset"] == "chimera", "stop_reason"].eq("ci: ±0.00 % ≤ 2 % after 3").all()
    assert last.loc[last["preset"] == "baseline", "stop_reason"].iloc[0].startswith("max_trials: 5")


def test_dry_run_shows_the_rounds_order_and_sends_nothing(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep(*args(standin, tmp_path, "order_seed=7", "trials=3", "dry_run=true"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "run order: order=random (order_seed=7), one job per cell and round" in out
    for r in range(3):
        assert f"  round {r}: {' '.join(map(str, round_order(range(5), 'random', 7, r)))}\n" in out
    assert standin.hits == [] and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_parallel_launcher_gets_the_same_rounds(standin: StandIn, tmp_path: Path) -> None:
    """joblib runs a round's jobs two at a time, but no job of a round starts before the last round ended."""
    standin.default = Script(tokens=["a", "b", "c"], first_token_delay_s=0.02, token_interval_s=0.01)
    result = run_sweep(*args(standin, tmp_path, "order_seed=5", "trials=2", "warmup=0", "hydra/launcher=joblib",
                             "hydra.launcher.n_jobs=2", "allow_shared_host=true"), timeout=300)
    assert result.returncode == 0, result.stderr
    df = _rows(tmp_path)
    assert sorted(df.groupby("round")["cell_hash"].nunique().tolist()) == [5, 5]
    first, second = df[df["round"] == 0], df[df["round"] == 1]
    assert first["started_at"].max() < second["started_at"].min()


@pytest.mark.slow   # ~3.5 s: composes and plans every refused design
def test_the_multirun_order_and_round_are_checked_before_any_job(compose_cfg) -> None:
    from sweep.cells import ConfigError
    from sweep.config import typed
    from sweep.plan import plan_cells
    from sweep.multirun.rounds import multirun_order, round_overrides

    def jobs(*extra: str) -> tuple[list, list]:
        cfgs = [typed(compose_cfg("+experiment=quickstart", f"cell={i}", *extra)) for i in range(5)]
        return cfgs, [plan_cells(c) for c in cfgs]

    order = multirun_order(*jobs("order_seed=4"))
    assert (order.order, order.seed, order.drawn) == ("random", 4, False)      # baseline + chimera: random
    assert multirun_order(*jobs("order=interleaved")).order == "interleaved"
    assert multirun_order(*jobs("order=blocked")) is None
    cfgs, cells = jobs()
    assert multirun_order(cfgs[1:], cells[1:]) is None                         # chimera cells only: blocked
    assert multirun_order(cfgs[:1], cells[:1]) is None                         # one job orders its own cells
    with pytest.raises(ConfigError, match="order and order_seed take one value for the whole multirun"):
        multirun_order(cfgs[:2] + [typed(compose_cfg("+experiment=quickstart", "cell=2", "order=interleaved"))],
                       cells[:3])
    assert round_overrides(["cell=1", "+order=blocked", "trials=3"], order, 2) == [
        "cell=1", "trials=3", "order=random", "order_seed=4", "round=2"]
    with pytest.raises(ConfigError, match=r"invalid round=3: this sweep has rounds 0..2"):
        plan_cells(typed(compose_cfg("trials=3", "round=3")))


def _warmups_announced(out: str) -> int:
    found = re.search(r"^warm-ups: (\d+) over (\d+) round job\(s\)", out, re.M)
    assert found, out
    n = int(found[1])
    assert f"({found[2]} measured trials + {n} warm-ups)" in out      # one visit: one trial (one prompt)
    return n


def test_dry_run_of_a_random_multirun_announces_the_warm_ups_it_runs(standin: StandIn, tmp_path: Path) -> None:
    """Two cells per load key: a cell's first visit warms up even when the model stays loaded; a revisit only
    after its server loaded other options."""
    _fast(standin)
    grid = ["chimera.num_ctx=512,2048", "chimera.temperature=0.6,0.8", "order=random", "order_seed=5", "trials=4",
            "warmup=1", "backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
            "telemetry.enabled=false", "progress=false", "chimera.num_predict=8"]
    dry = run_sweep("-m", *grid, f"output_root={tmp_path / 'dry'}", "dry_run=true")
    assert dry.returncode == 0, dry.stderr
    announced = _warmups_announced(dry.stdout)
    ran = run_sweep("-m", *grid, f"output_root={tmp_path / 'run'}")
    assert ran.returncode == 0, ran.stderr
    assert int(trials_of(tmp_path / "run")["warmup"].sum()) == announced


def test_dry_run_under_a_worker_launcher_gives_an_upper_bound_of_a_warm_up_per_round_job(
        standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)
    run = args(standin, tmp_path, "order_seed=7", "trials=3", "warmup=1", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", "allow_shared_host=true")
    dry = run_sweep(*run, "dry_run=true")
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout
    in_one = re.search(r"^warm-ups: up to 15 over 15 round job\(s\) \(upper bound\): .*\(in one process: (\d+)\)$",
                       out, re.M)
    assert in_one and int(in_one[1]) < 15, out
    assert "up to 30 requests (15 measured trials + up to 15 warm-ups), up to 15 model loads" in out
    assert "estimated duration: up to " in out
    ran = run_sweep(*run)
    assert ran.returncode == 0, ran.stderr
    assert int(in_one[1]) <= int(trials_of(tmp_path)["warmup"].sum()) <= 15
