"""Trial tables as other people's data look: the TR114- and TR110-shaped multi-agent sets, and a Hypothesis
strategy of arbitrary small sweeps (prompt, agent and multi-agent workloads) for the analysis's properties.

Every frame holds the columns of the Parquet contract (``sweep/contract.py``) that the harnesses fill in;
values come from a numpy generator seeded by the caller (or by Hypothesis), so a failing example replays.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import strategies as st

AGENT_STAGES = ("analysis", "report")


def _ttft_bimodal(rng: np.random.Generator, reload_p: float) -> tuple[float, float, bool]:
    """(TTFT ms, load ms, reloaded): ~0.6 s calls, a few 6–7 s model reloads (TR114's shape)."""
    if rng.random() < reload_p:
        load = float(rng.uniform(5600, 6600))
        return load + float(rng.lognormal(np.log(500), 0.1)), load, True
    return float(rng.lognormal(np.log(600), 0.08)), float(rng.uniform(1, 20)), False


def tr114_like(seed: int = 114, runs: int = 5, reload_flags: bool = False) -> pd.DataFrame:
    """Two agents, ``runs`` concurrent runs per config, one row per LLM call (analysis + report stages).

    Configs as TR114 swept them: three scenarios (baseline_vs_chimera: agent 0 baseline, agent 1 chimera;
    chimera_homo; chimera_hetero: the agents differ in num_gpu) × num_gpu × num_ctx.  TTFT is bimodal:
    ~0.6 s, with a 6–7 s reload on ~12 % of calls (more on a run's first call).  The harness that wrote
    TR114 had no ``reloaded`` column; ``reload_flags=True`` adds it, as this project's sweeps write it.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for scenario, num_gpu, num_ctx in itertools.product(("baseline_vs_chimera", "chimera_homo", "chimera_hetero"),
                                                        (60, 80, 120), (512, 1024)):
        cell = f"tr114 {scenario} num_gpu={num_gpu} num_ctx={num_ctx}"
        for run in range(runs):
            run_id = f"{cell}/r{run}"
            calls = []
            for agent in (0, 1):
                baseline = scenario == "baseline_vs_chimera" and agent == 0
                gpu = None if baseline else (num_gpu if scenario != "chimera_hetero" or agent == 0 else num_gpu // 2)
                wall = 0.0
                for i, stage in enumerate(AGENT_STAGES):
                    ttft, load, reloaded = _ttft_bimodal(rng, 0.3 if i == 0 and run == 0 else 0.1)
                    tps = float(rng.normal(95 if baseline else 105, 4))
                    tokens = int(rng.integers(300, 500))
                    e2e = ttft + tokens / tps * 1000
                    wall += e2e
                    calls.append(dict(
                        sweep_id="TR114", cell_id=cell, preset="baseline" if baseline else "chimera",
                        model="gemma3:latest", backend="ollama", workload="multi_agent",
                        num_gpu=gpu, num_ctx=None if baseline else num_ctx, temperature=None if baseline else 0.8,
                        scenario=scenario, agents=2, run_kind="concurrent", run_id=run_id, agent_id=agent,
                        workflow_id=f"{run_id}/a{agent}", stage=stage, prompt_id=stage, trial=run,
                        warmup=False, status="ok", ttft_ms=ttft, throughput_tok_s=tps, e2e_ms=e2e,
                        eval_count=tokens, eval_duration_ms=tokens / tps * 1000, load_duration_ms=load,
                        prompt_eval_duration_ms=float(rng.uniform(20, 60)), ingest_ms=3.0,
                        **({"reloaded": reloaded} if reload_flags else {}),
                    ))
                for c in calls[-2:]:
                    c["workflow_wall_ms"] = wall + 3.0
            run_wall = max(c["workflow_wall_ms"] for c in calls) * float(rng.uniform(1.0, 1.05))
            for c in calls:
                c["run_wall_ms"] = run_wall
            rows += calls
    return pd.DataFrame(rows)


def tr110_like(seed: int = 110, runs: int = 5) -> pd.DataFrame:
    """Two agents, one row per agent and run holding that agent's aggregates (TR110's CSVs): mean tok/s,
    mean TTFT, its workflow wall and the run's wall; no stages, no workflow ids, no cell ids."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for preset, num_gpu, num_ctx in [("baseline", None, None)] + [("chimera", g, c) for g in (40, 80) for c in (512, 2048)]:
        for run in range(runs):
            walls = [float(rng.normal(14000, 900)) for _ in (0, 1)]
            run_wall = max(walls) * float(rng.uniform(1.0, 1.1))
            for agent in (0, 1):
                reload = rng.random() < 0.15
                rows.append(dict(
                    model="gemma3:latest", preset=preset, num_gpu=num_gpu, num_ctx=num_ctx, scenario="dual_ollama",
                    agents=2, run_id=f"{preset}-{num_gpu}-{num_ctx}-{run}", agent_id=agent, status="ok",
                    throughput_tok_s=float(rng.normal(100 if preset == "chimera" else 92, 3)),
                    ttft_ms=float(rng.uniform(5800, 6900) if reload else rng.lognormal(np.log(550), 0.1)),
                    workflow_wall_ms=walls[agent], run_wall_ms=run_wall, eval_count=int(rng.integers(800, 1200)),
                ))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- Hypothesis: arbitrary small sweeps

SHAPES = ("lognormal", "bimodal", "constant", "zeros", "nan")


@dataclass(frozen=True)
class Spec:
    """What one generated table holds (Hypothesis draws it; ``table`` turns it into rows)."""

    seed: int
    cells: int
    trials: tuple[int, ...]          # measured trials per cell
    shapes: tuple[str, ...]          # value shape per cell
    baseline: bool
    datasets: int
    workload: str                    # prompt | agent | multi_agent
    failed: int                      # failed rows per cell
    warmups: int
    reload_flags: bool


@st.composite
def specs(draw: st.DrawFn, workloads: tuple[str, ...] = ("prompt", "prompt", "agent", "multi_agent"),
          most_datasets: int = 2) -> Spec:
    """1–12 cells, 1–30 trials each, every value shape, failed and warm-up rows, with or without a baseline,
    one or several datasets, prompt / agent / multi-agent workloads."""
    workload = draw(st.sampled_from(workloads))
    cells = draw(st.integers(1, 12 if workload == "prompt" else 4))
    most = 30 if workload == "prompt" else 6
    return Spec(
        seed=draw(st.integers(0, 2**32 - 1)), cells=cells,
        trials=tuple(draw(st.lists(st.integers(1, most), min_size=cells, max_size=cells))),
        shapes=tuple(draw(st.lists(st.sampled_from(SHAPES), min_size=cells, max_size=cells))),
        baseline=draw(st.booleans()), datasets=draw(st.integers(1, most_datasets)), workload=workload,
        failed=draw(st.integers(0, 2)), warmups=draw(st.integers(0, 1)), reload_flags=draw(st.booleans()),
    )


def _values(rng: np.random.Generator, shape: str, n: int, centre: float) -> tuple[np.ndarray, np.ndarray]:
    """n values of one shape around ``centre``, and which of them reloaded the model."""
    reloaded = np.zeros(n, dtype=bool)
    if shape == "constant":
        return np.full(n, centre), reloaded
    x = centre * np.exp(rng.normal(0, rng.uniform(0.02, 0.6), n))
    if shape == "bimodal":
        reloaded = rng.random(n) < 0.25
        x = np.where(reloaded, centre * rng.uniform(8, 12, n), x)
    elif shape == "zeros":
        x[rng.random(n) < 0.3] = 0.0
    elif shape == "nan":
        x[rng.random(n) < 0.3] = np.nan
    return x, reloaded


def table(spec: Spec) -> pd.DataFrame:
    """The rows of ``spec``: one per call (prompt/agent) with the contract's columns."""
    rng = np.random.default_rng(spec.seed)
    rows: list[dict[str, Any]] = []
    for ds in range(spec.datasets):
        for c in range(spec.cells):
            preset = "baseline" if spec.baseline and c == 0 else "chimera"
            options = {} if preset == "baseline" else {"num_ctx": 256 * (1 + c % 3), "num_gpu": 40 * (1 + c // 3)}
            cell_id = f"{preset} m" + "".join(f" {k}={v}" for k, v in options.items())
            n = spec.trials[c]
            tps, rel = _values(rng, spec.shapes[c], n, float(rng.uniform(20, 120)))
            ttft, rel2 = _values(rng, spec.shapes[c], n, float(rng.uniform(50, 900)))
            common = dict(sweep_id=f"S{ds}", cell_id=cell_id, preset=preset, model="m", backend="ollama",
                          workload=spec.workload, prompt_id="0", **options)
            for i in range(spec.warmups):
                rows.append(common | dict(trial=i, warmup=True, status="ok", throughput_tok_s=5.0, ttft_ms=9000.0))
            for i in range(spec.failed):
                rows.append(common | dict(trial=i, warmup=False, status="timeout", throughput_tok_s=None,
                                          ttft_ms=None))
            itl, _ = _values(rng, spec.shapes[c], n, float(rng.uniform(5, 80)))          # the token timings
            tokens = rng.integers(1, 300, n)                                                # 1: no TPOT
            prompt_ms, _ = _values(rng, spec.shapes[c], n, float(rng.uniform(10, 400)))
            for i in range(n):
                row = common | dict(trial=i, warmup=False, status="ok", throughput_tok_s=tps[i], ttft_ms=ttft[i],
                                    eval_count=int(tokens[i]),
                                    eval_duration_ms=tokens[i] / tps[i] * 1000 if tps[i] > 0 else None,
                                    load_duration_ms=5000.0 if rel2[i] else 5.0,
                                    e2e_ms=ttft[i] + itl[i] * max(int(tokens[i]) - 1, 0),
                                    itl_ms_mean=itl[i], itl_ms_p50=itl[i] * 0.9, itl_ms_p99=itl[i] * 3,
                                    prompt_eval_count=int(rng.integers(0, 600)), prompt_eval_duration_ms=prompt_ms[i])
                if spec.reload_flags:
                    row["reloaded"] = bool(rel[i] or rel2[i])
                rows.append(row)
    df = pd.DataFrame(rows)
    if spec.workload != "prompt":
        df = _as_agent_rows(df, rng, multi=spec.workload == "multi_agent")
    return df


def _as_agent_rows(df: pd.DataFrame, rng: np.random.Generator, multi: bool) -> pd.DataFrame:
    """Give each call a stage and a workflow (two calls each); multi-agent: two agents per run, concurrent."""
    df = df.copy()
    df["stage"] = np.where(df.groupby(["sweep_id", "cell_id"]).cumcount() % 2 == 0, "analysis", "report")
    df["prompt_id"] = df["stage"]
    seq = df.groupby(["sweep_id", "cell_id"]).cumcount() // 2
    df["workflow_id"] = df["sweep_id"] + "/" + df["cell_id"] + "/w" + seq.astype(str)
    df["workflow_wall_ms"] = df.groupby("workflow_id")["e2e_ms"].transform(lambda s: s.sum(min_count=1)) + 3.0
    df["ingest_ms"] = 3.0
    if multi:
        df["agents"] = 2
        df["agent_id"] = (seq % 2).astype(int)
        run = seq // 2
        df["run_id"] = df["sweep_id"] + "/" + df["cell_id"] + "/r" + run.astype(str)
        df["run_kind"] = np.where(run % 3 == 2, "isolated", "concurrent")
        df.loc[df["run_kind"] == "isolated", "agent_id"] = 0
        df["run_wall_ms"] = df.groupby("run_id")["workflow_wall_ms"].transform("max") * float(rng.uniform(1, 1.1))
        df["scenario"] = "chimera_homo"
    return df
