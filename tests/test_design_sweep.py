"""order=, state=, trials=auto and offload verification, end to end: ``python -m sweep`` against the stand-in.

The stand-in keeps model residency like Ollama (a request loads its model with its load-time options;
``keep_alive: 0`` unloads; ``GET /api/ps`` lists what is loaded, with a scripted share in VRAM), so
what the sweep does to the server can be read back from the server's side.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sweep.adaptive import half_width_pct
from tests.fixtures_server import require_engine
from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import only_sweep, run_module, run_sweep, trials_of

GRID = ["+experiment=quickstart", "grid.fixed.num_predict=8"]   # baseline + num_ctx {512,2048} × num_thread {1,2}


def common(standin: StandIn, tmp_path: Path, *extra: str) -> list[str]:
    return ["backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3", "telemetry.enabled=false",
            "backend.retry_backoff_s=0", f"output_root={tmp_path}", *extra]


def _fast(standin: StandIn) -> None:
    standin.default = Script(tokens=["a", "b", "c"], first_token_delay_s=0.002, token_interval_s=0.001)


def _sequence(standin: StandIn) -> list[tuple]:
    """The load-time options of every streamed request, in arrival order (warm-ups included)."""
    return [(r.get("options", {}).get("num_ctx"), r.get("options", {}).get("num_thread")) for r in standin.requests]


def _measured(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["warmup"] & (df["status"] == "ok")].sort_values("started_at")


def test_random_order_is_a_reproducible_permutation_per_round(standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)
    runs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        result = run_sweep(*common(standin, tmp_path / name, *GRID, "order=random", f"order_seed={seed}",
                                   "trials=4", "warmup=0"))
        assert result.returncode == 0, result.stderr
        df = _measured(trials_of(tmp_path / name))
        runs.append([(r["round"], r["cell_id"]) for _, r in df.iterrows()])
        prov = json.loads((only_sweep(tmp_path / name) / "_run.json").read_text())
        configs = [c["config"] for c in prov["cells"].values()]
        assert all(c["order"] == "random" and c["order_seed"] == seed for c in configs)
    a, b, c = runs
    assert a == b                          # same seed, same order
    assert a != c                          # another seed, another order
    cells = sorted({cell for _, cell in a})
    assert len(cells) == 5
    rounds = [[cell for r, cell in a if r == k] for k in range(4)]
    assert all(sorted(r) == cells for r in rounds)          # every round visits every cell once
    assert len({tuple(r) for r in rounds}) > 1               # ... in a permuted order


def test_interleaved_order_alternates_and_warms_up_after_each_reload(standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)
    result = run_sweep(*common(standin, tmp_path, *GRID, "order=interleaved", "trials=3", "warmup=1"))
    assert result.returncode == 0, result.stderr
    seq = _sequence(standin)
    grid = [(None, None), (512, 1), (512, 2), (2048, 1), (2048, 2)]
    # Each visit: the load-time options changed since the previous request, so a warm-up then the trial.
    assert seq == [x for x in grid for _ in range(2)] * 3
    df = trials_of(tmp_path)
    assert (df.groupby("cell_id")["warmup"].sum() == 3).all()
    measured = _measured(df)
    assert [int(r) for r in measured["round"]] == [0] * 5 + [1] * 5 + [2] * 5
    assert not measured["reloaded"].any()                 # the warm-up took every reload
    assert "order=interleaved: 10 extra warm-up(s)" in result.stderr


def test_blocked_order_is_cell_by_cell(standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)
    result = run_sweep(*common(standin, tmp_path, *GRID, "order=blocked", "trials=2", "warmup=1"))
    assert result.returncode == 0, result.stderr
    seq = _sequence(standin)
    assert seq == [x for x in [(None, None), (512, 1), (512, 2), (2048, 1), (2048, 2)] for _ in range(3)]
    assert "extra warm-up" not in result.stderr


def test_cold_state_unloads_before_every_trial_and_reports_load_times(standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)
    standin.reload_load_duration = 800_000_000
    result = run_sweep(*common(standin, tmp_path, "state=cold", "trials=3", "warmup=1"))
    assert result.returncode == 0, result.stderr
    assert standin.resident_before == [[], [], []]        # nothing loaded when each trial arrived; no warm-up
    assert standin.hits.count("POST /api/generate") == 6  # an unload before each of the 3 trials
    df = trials_of(tmp_path)
    assert list(df["state"]) == ["cold"] * 3 and df["reloaded"].all() and not df["warmup"].any()
    assert (df["load_duration_ms"] == 800.0).all()
    report = run_module("analysis", str(only_sweep(tmp_path)), "--no-figures", "--out", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr
    (row,) = pd.read_csv(tmp_path / "r" / "comprehensive.csv").to_dict("records")
    assert row["cell"].endswith("[cold]") and row["load ms mean"] == 800.0


def test_reload_state_flags_the_trial_after_a_load_time_change(standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)
    standin.reload_load_duration = 500_000_000
    result = run_sweep(*common(standin, tmp_path, *GRID, "state=reload", "order=interleaved", "trials=2",
                               "grid.axes.num_thread=[2]"))
    assert result.returncode == 0, result.stderr
    df = _measured(trials_of(tmp_path))
    assert not df["warmup"].any() if "warmup" in df else True
    # Three cells alternate, so every trial follows another cell's load-time options: all reloaded.
    assert df["reloaded"].all() and (df["load_duration_ms"] == 500.0).all()
    report = run_module("analysis", str(only_sweep(tmp_path)), "--no-figures", "--out", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr
    cells = set(pd.read_csv(tmp_path / "r" / "comprehensive.csv")["cell"])
    assert cells and all(c.endswith("[reload]") for c in cells), cells


@pytest.mark.parametrize("vram, flag", [(0.0, "CPU only: num_gpu=80 but 0 % in VRAM"), (1.0, "ok")])
def test_offload_is_verified_after_the_warm_up(standin: StandIn, tmp_path: Path, vram: float, flag: str) -> None:
    _fast(standin)
    standin.vram_fraction = vram          # 0.0: a server that ignores num_gpu
    result = run_sweep(*common(standin, tmp_path, "chimera=optimized", "trials=2"))
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    measured = df[~df["warmup"]]
    assert (measured["size"] == 500_000_000).all() and (measured["vram_fraction"] == vram).all()
    assert (measured["context_length"] == 512).all()
    report = run_module("analysis", str(only_sweep(tmp_path)), "--no-figures", "--out", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr
    (row,) = pd.read_csv(tmp_path / "r" / "comprehensive.csv").to_dict("records")
    assert row["offload"] == flag


def test_context_length_the_server_chose_is_flagged(standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)
    standin.context_length = 2048
    assert run_sweep(*common(standin, tmp_path, "chimera=optimized", "trials=2")).returncode == 0
    report = run_module("analysis", str(only_sweep(tmp_path)), "--no-figures", "--out", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr
    (row,) = pd.read_csv(tmp_path / "r" / "comprehensive.csv").to_dict("records")
    assert "context_length 2048 ≠ num_ctx 512" in row["offload"]


def test_trials_auto_stops_at_the_target_on_a_steady_server(standin: StandIn, tmp_path: Path) -> None:
    _fast(standin)        # every answer reports the same eval_duration: throughput has no spread
    result = run_sweep(*common(standin, tmp_path, "trials=auto", "auto.min_trials=3", "auto.max_trials=10"))
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    measured = df[~df["warmup"]]
    assert len(measured) == 3
    assert measured["stop_reason"].dropna().tolist() == ["ci: ±0.00 % ≤ 2 % after 3"]
    assert measured.sort_values("trial")["stop_reason"].iloc[-1].startswith("ci:")


def test_trials_auto_stops_at_max_trials_on_a_noisy_server(standin: StandIn, tmp_path: Path) -> None:
    rng = random.Random(5)
    standin.script_for = lambda body: Script(tokens=["a", "b", "c"], first_token_delay_s=0.002,
                                             token_interval_s=0.001, eval_duration=int(rng.uniform(0.5, 1.5) * 4e8))
    result = run_sweep(*common(standin, tmp_path, "trials=auto", "auto.max_trials=6"))
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    measured = df[~df["warmup"]].sort_values("trial")
    assert len(measured) == 6
    assert measured["stop_reason"].iloc[-1].startswith("max_trials: 6")
    report = run_module("analysis", str(only_sweep(tmp_path)), "--no-figures", "--out", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr
    (row,) = pd.read_csv(tmp_path / "r" / "comprehensive.csv").to_dict("records")
    assert row["stopped"].startswith("max_trials: 6")


@pytest.mark.parametrize("args, message", [
    (["state=frozen"], "invalid state='frozen': choose one of warm, cold, reload"),
    (["order=shuffled"], "invalid order='shuffled': choose one of blocked, interleaved, random"),
    (["trials=many"], "invalid trials='many'"),
    (["trials=auto", "auto.min_trials=5", "auto.max_trials=4"], "invalid auto.min_trials=5"),
])
def test_bad_design_keys_are_one_line(standin: StandIn, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_sweep(*common(standin, tmp_path, *args))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert standin.requests == []


@pytest.mark.shares_machine   # load durations cold against warm, not speed
def test_cold_state_on_the_embedded_engine_loads_before_every_trial(tmp_path: Path) -> None:
    """The real engine: each cold trial reports a real load (load_duration > 0); warm trials report none.

    The sweep confirms the unload through the engine's own ``/api/ps`` before every trial (it would print
    "could not confirm" otherwise); the engine reports its CPU build truthfully: 0 bytes in VRAM.
    """
    require_engine()
    tiny = ("chimera.num_predict=4", "chimera.num_ctx=256", "telemetry.enabled=false", f"output_root={tmp_path}")
    result = run_sweep("state=cold", "trials=2", *tiny, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "could not confirm" not in result.stderr
    cold = trials_of(tmp_path)
    assert list(cold["state"]) == ["cold", "cold"] and not cold["warmup"].any()
    assert (cold["load_duration_ms"] > 5).all(), cold["load_duration_ms"].tolist()
    assert (cold["size_vram"] == 0).all() and (cold["vram_fraction"] == 0).all() and (cold["size"] > 0).all()
    assert (cold["context_length"] == 256).all()
    warm_root = tmp_path / "warm"
    assert run_sweep("trials=2", *tiny[:-1], f"output_root={warm_root}", timeout=240).returncode == 0
    warm = trials_of(warm_root)
    measured = warm[~warm["warmup"]]
    assert (measured["load_duration_ms"] < cold["load_duration_ms"].min()).all()
    assert not measured["reloaded"].any()


def test_the_stopping_rules_half_width_is_the_t_interval_in_percent_of_the_mean_by_hand() -> None:
    """10, 12, 14: mean 12, sd 2, t(0.975, 2) = 4.302653 → 4.302653 · 2 / √3 = 4.9683 = 41.402 % of the mean."""
    assert half_width_pct([10.0, 12.0, 14.0]) == pytest.approx(41.40229519739588, rel=1e-9)
    assert half_width_pct([10.0, None, 12.0, float("nan"), 14.0]) == pytest.approx(41.40229519739588, rel=1e-9)
    assert half_width_pct([10.0, 12.0, 14.0], confidence=0.90) == pytest.approx(2.919986 * 2 / 3 ** 0.5 / 12 * 100,
                                                                                rel=1e-6)
    assert half_width_pct([5.0, 5.0]) == 0.0
    assert half_width_pct([7.0]) == half_width_pct([]) == half_width_pct([-1.0, 1.0]) == float("inf")


@given(st.lists(st.one_of(st.none(), st.floats(min_value=0.001, max_value=1e6)), max_size=40))
def test_the_stopping_rules_half_width_is_never_negative_and_inf_below_two_values(values: list[float | None]) -> None:
    hw = half_width_pct(values)
    assert hw >= 0
    assert (hw == float("inf")) == (sum(v is not None for v in values) < 2)
