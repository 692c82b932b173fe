"""Optuna search: the job returns the objective, a failed cell is a bad value, the best setting is printed."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import only_sweep, run_module, run_sweep

# Server-reported generation time per num_ctx: 8 tokens in 200 ms = 40 tok/s at 1024, slower either side.
EVAL_MS = {256: 800, 512: 400, 1024: 200, 2048: 1600}


def _speed_by_num_ctx(body: dict) -> Script:
    num_ctx = body.get("options", {}).get("num_ctx")
    if num_ctx == 4096:
        return Script(fault="http_500")
    return Script(eval_duration=EVAL_MS[num_ctx] * 1_000_000, first_token_delay_s=0.005, token_interval_s=0.001)


def test_optuna_search_finds_the_fastest_num_ctx_and_survives_a_failing_cell(standin: StandIn,
                                                                               tmp_path: Path) -> None:
    standin.script_for = _speed_by_num_ctx
    result = run_sweep("-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=5",
                       "hydra.sweeper.params=null", "chimera.num_ctx=choice(256,512,1024,2048,4096)", "backend=ollama", f"backend.base_url={standin.base_url}",
                       "model=gemma3", "trials=2", "warmup=0", "backend.retries=0",
                       "backend.max_consecutive_failures=1", f"output_root={tmp_path}", timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert re.search(r"Best parameters: \{'chimera.num_ctx': 1024\}", out), out[-2000:]
    assert "Best value: 40.0" in out
    best = re.search(r"best \(mean throughput_tok_s\): (.*) = 40\.00 \(throughput_tok_s mean 40\.00, "
                     r"95 % CI (\S+) – (\S+), n=2\)", result.stderr)
    assert best and "num_ctx=1024" in best.group(1), result.stderr[-2000:]
    df = pd.read_parquet(only_sweep(tmp_path))           # every visited point is a normal cell
    assert sorted(df["num_ctx"].unique()) == [256, 512, 1024, 2048, 4096]
    assert df[df["num_ctx"] == 4096]["status"].eq("http_error").all()
    means = df[df["status"] == "ok"].groupby("num_ctx")["throughput_tok_s"].mean()
    assert means.idxmax() == 1024


def test_a_search_revisiting_a_cell_reuses_its_trials(standin: StandIn, tmp_path: Path) -> None:
    """Three trials over two values: the sampler must propose one cell twice (pigeonhole)."""
    result = run_sweep("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=1",
                       "chimera.num_ctx=choice(512,1024)", "chimera.num_gpu=80", "chimera.temperature=0.8",
                       "backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
                       "trials=2", "warmup=0", f"output_root={tmp_path}", timeout=300)
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(only_sweep(tmp_path))
    assert df.groupby("cell_hash").size().eq(2).all()      # nothing measured twice
    assert len(standin.requests) == 2 * df["cell_hash"].nunique()


def test_analysis_of_a_search_shows_best_history_and_importance(standin: StandIn, tmp_path: Path) -> None:
    """A search over num_ctx × temperature on a stand-in whose speed depends on num_ctx only."""
    standin.script_for = _speed_by_num_ctx
    result = run_sweep("-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=8",
                       "hydra.sweeper.params=null", "chimera.num_ctx=choice(256,512,1024,2048)",
                       "chimera.temperature=choice(0.5,0.9)", "backend=ollama",
                       f"backend.base_url={standin.base_url}", "model=gemma3", "trials=2", "warmup=0",
                       f"output_root={tmp_path}", timeout=300)
    assert result.returncode == 0, result.stderr
    sweep_dir = only_sweep(tmp_path)
    report = run_module("analysis", str(sweep_dir), "--markdown", timeout=300)   # no --search: detected
    assert report.returncode == 0, report.stderr
    assert re.search(r"^## \d+\. Search$", report.stdout, re.M)
    best = pd.read_csv(sweep_dir / "_report" / "search_best.csv")
    assert "num_ctx=1024" in best["cell"][0] and best["throughput_tok_s mean"][0] == 40.0
    hist = pd.read_csv(sweep_dir / "_report" / "search_history.csv")
    assert hist["step"].tolist() == list(range(1, 9))
    assert hist["best so far"].is_monotonic_increasing and hist["best so far"].iloc[-1] == 40.0
    assert hist["new best"].eq("yes").sum() == hist["best so far"].nunique()     # strict improvements only
    imp = pd.read_csv(sweep_dir / "_report" / "search_importance.csv").set_index("parameter")
    assert imp.loc["num_ctx", "η² (share of variance)"] > 0.99            # speed depends on num_ctx only
    assert imp.loc["temperature", "η² (share of variance)"] < 0.01
    assert float(imp.loc["num_ctx", "best level"]) == 1024
    assert (sweep_dir / "_report" / "figures" / "search.png").is_file()


def test_objective_is_the_mean_over_measured_trials_with_an_optional_ttft_ceiling() -> None:
    from sweep.config import ObjectiveConfig
    from sweep.objective import Objective, score
    from sweep.cells import ConfigError

    def row(tps: float, ttft: float, warmup: bool = False, status: str = "ok") -> dict:
        return {"warmup": warmup, "status": status, "throughput_tok_s": tps, "ttft_ms": ttft}

    rows = [row(99.0, 5000.0, warmup=True), row(10.0, 100.0), row(20.0, 200.0), row(30.0, 900.0),
            row(0.0, 0.0, status="timeout")]
    plain = score(rows, Objective())
    assert (plain.value, plain.n, plain.mean) == (20.0, 3, 20.0) and plain.ci_lo < 20.0 < plain.ci_hi
    assert score(rows, Objective(stat="median")).value == 20.0
    capped = score(rows, Objective(ttft_p95_max_ms=500.0, failed_value=-1.0))
    assert capped.value == -1.0 and "p95 TTFT 830 ms > 500 ms" in capped.why_failed
    assert score(rows, Objective(ttft_p95_max_ms=1000.0)).value == 20.0
    assert score([row(5.0, 1.0, status="http_error")], Objective()).value == 0.0      # no successful trial
    with pytest.raises(ConfigError, match="invalid objective.metric=cell_id"):
        Objective.from_config(ObjectiveConfig(metric="cell_id"))
