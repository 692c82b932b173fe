"""Speed benchmark of the analysis: 1 M synthetic trials across 1,000 cells → all tables.

Run with ``python -m benchmarks.analysis_speed`` (``--quick`` for 100 k rows).
Times the tidy step and every table (figures excluded, rendering to Markdown
included) and prints seconds and rows/s.  The target is < 1.5 s for 1 M rows on
the 2-core CI machine (``analysis_1m_rows_s`` in ``python -m benchmarks``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

TARGET_S = 1.5


def synthetic_trials(rows: int = 1_000_000, cells: int = 1_000, seed: int = 0) -> pd.DataFrame:
    """A trial frame shaped like a real sweep: 2 models × num_gpu × num_ctx × temperature × top_p.

    One baseline cell per model, the rest chimera; ~2 % warm-ups and ~1 % failures;
    throughput depends on num_gpu and num_ctx, TTFT on num_ctx, and the first trial
    of each cell is a slow cold start.
    """
    rng = np.random.default_rng(seed)
    per = rows // cells
    gpu_levels = np.array([0, 8, 16, 24, 99])
    ctx_levels = np.array([512, 1024, 2048, 4096, 8192])
    temp_levels = np.array([0.0, 0.4, 0.8, 1.2])
    top_p_levels = np.array([0.5, 0.8, 0.9, 0.95, 1.0])
    c = np.arange(cells)
    model = np.where(c % 2 == 0, "gemma3:270m", "qwen3:0.6b")
    num_gpu = gpu_levels[(c // 2) % 5]
    num_ctx = ctx_levels[(c // 10) % 5]
    temperature = temp_levels[(c // 50) % 4]
    top_p = top_p_levels[(c // 200) % 5]
    preset = np.where(c < 2, "baseline", "chimera")
    cell_id = np.array([
        f"{p} {m} num_gpu={g} num_ctx={x} temperature={t} top_p={q}"
        for p, m, g, x, t, q in zip(preset, model, num_gpu, num_ctx, temperature, top_p)
    ])
    cell_idx = np.repeat(c, per)
    trial = np.tile(np.arange(per), cells)
    base_tp = 40 + num_gpu * 0.8 - np.log2(num_ctx / 512) * 2
    tp = base_tp[cell_idx] * rng.lognormal(0, 0.05, rows)
    ttft = (30 + num_ctx / 100)[cell_idx] * rng.lognormal(0, 0.15, rows)
    ttft[trial == 0] *= 8  # cold start
    status = np.where(rng.random(rows) < 0.01, "timeout", "ok")
    warmup = trial < max(1, per // 50)
    tp[status != "ok"] = np.nan
    ttft[status != "ok"] = np.nan
    eval_count = rng.integers(100, 300, rows)
    return pd.DataFrame({
        "sweep_id": "bench",
        "cell_id": cell_id[cell_idx],
        "preset": preset[cell_idx],
        "model": model[cell_idx],
        "backend": "embedded",
        "base_url": "http://127.0.0.1:11434",
        "num_gpu": num_gpu[cell_idx],
        "num_ctx": num_ctx[cell_idx],
        "temperature": temperature[cell_idx],
        "top_p": top_p[cell_idx],
        "workload": "report",
        "prompt_id": "0",
        "trial": trial,
        "warmup": warmup,
        "status": status,
        "ttft_ms": ttft,
        "throughput_tok_s": tp,
        "load_duration_ms": np.where(trial == 0, 900.0, 5.0) * rng.lognormal(0, 0.1, rows),
        "prompt_eval_duration_ms": ttft * 0.6,
        "eval_duration_ms": eval_count / tp * 1000,
        "eval_count": eval_count,
    })


def measure(rows: int = 1_000_000) -> dict[str, float]:
    """Build ``rows`` synthetic trials over rows/1,000 cells, time tidy + all tables + Markdown; print and return."""
    from analysis.load import combine, tidy
    from analysis.render import to_markdown
    from analysis.tables import analyse

    cells = max(10, rows // 1_000)
    raw = synthetic_trials(rows, cells)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    df, _ = combine([tidy(raw, "bench")])   # what analysis.load.load does after reading files
    t1 = time.perf_counter()
    an = analyse(df)
    t2 = time.perf_counter()
    md = "\n\n".join(to_markdown(t) for t in an.tables)
    t3 = time.perf_counter()
    cpu = time.process_time() - cpu0   # on a shared machine, CPU time is the steadier figure
    total = t3 - t0
    print(f"analysis speed: {rows:,} rows, {cells:,} cells, {len(an.tables)} tables, {len(md):,} chars of Markdown")
    print(f"  tidy {t1 - t0:.2f} s, tables {t2 - t1:.2f} s, render {t3 - t2:.2f} s")
    print(f"  total {total:.2f} s = {rows / total:,.0f} rows/s (goal for 1 M rows: < {TARGET_S} s)")
    key = "analysis_1m_rows_s" if rows == 1_000_000 else f"analysis_{rows}_rows_s"
    return {key: total, key.replace("_s", "_cpu_s"): cpu, "analysis_tidy_s": t1 - t0, "analysis_tables_s": t2 - t1, "analysis_render_s": t3 - t2}


def run(quick: bool = False) -> dict[str, float]:
    return measure(100_000 if quick else 1_000_000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 k rows / 100 cells instead of 1 M / 1,000")
    run(quick=ap.parse_args().quick)


if __name__ == "__main__":
    main()
