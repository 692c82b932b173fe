"""Launcher start-up and seconds per cell on this machine, on the real embedded engine.

The same tiny grid (2 cells × (1 warm-up + 3 trials) of 32 tokens, Gemma 3 270M)
through each Hydra launcher.  From the stored rows: seconds per cell (first
request sent → last byte of the cell), and the launcher's overhead: wall time of
``python -m sweep`` minus the span in which trials ran (interpreter, Hydra,
launcher start-up, engine start and first model load, shutdown).  These are the
figures ``docs/scaling.md`` builds on; on a shared 2-core machine they are noisy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
GRID = ("chimera.num_ctx=256,512", "chimera.num_predict=32", "trials=3", "warmup=1")
LAUNCHERS: dict[str, tuple[str, ...]] = {
    "basic": (),
    "joblib (2 workers)": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
    "ray (local, 2 slots)": ("hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                             "+hydra.launcher.ray.init.include_dashboard=false"),
    "submitit_local": ("hydra/launcher=submitit_local",),
}


def _cells(sweep_dir: Path) -> tuple[pd.Series, float]:
    df = pd.read_parquet(sweep_dir)
    end = df["started_at"] + pd.to_timedelta(df["e2e_ms"], unit="ms")
    per_cell = (end.groupby(df["cell_hash"]).max() - df.groupby("cell_hash")["started_at"].min()).dt.total_seconds()
    span = (end.max() - df["started_at"].min()).total_seconds()
    return per_cell, span


def _reloads() -> dict[str, float]:
    """Model loads per plan, typed order vs reload-aware (computed from the plan, nothing timed)."""
    import itertools

    from hydra import compose, initialize_config_dir

    from sweep.config import register, typed as typed_config
    from sweep.cells import load_key
    from sweep.plan import count_loads, plan_cells, reload_order

    register()
    typed = {"chimera.temperature": ("0.6", "0.8"), "chimera.num_ctx": ("256", "512", "1024"),
             "model": ("gemma3", "llama3_1_8b_q4")}
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        tr111 = plan_cells(typed_config(compose(config_name="config", overrides=["+experiment=tr111"])))
        grid = [plan_cells(typed_config(compose(config_name="config", overrides=["backend=ollama", *(
            f"{k}={v}" for k, v in zip(typed, combo))])))[0] for combo in itertools.product(*typed.values())]
    figures = {}
    for key, name, cells in (("tr111", "tr111 (19 cells)", tr111),
                             ("grid12", "temperature × num_ctx × model typed (12 cells)", grid)):
        typed_loads = count_loads([load_key(c) for c in cells])
        ordered_loads = count_loads([load_key(c) for c in reload_order(cells, load_key)])
        print(f"model loads, {name}: typed order {typed_loads}, reload-aware {ordered_loads}")
        figures[f"loads_{key}_typed"], figures[f"loads_{key}_reload_aware"] = typed_loads, ordered_loads
    return figures


def run(quick: bool = False) -> dict[str, float]:
    """Prints the table; returns its figures for benchmarks/results.json."""
    figures = _reloads()
    ray_tmp = tempfile.mkdtemp(prefix="ray-")
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_TMPDIR=ray_tmp)
    rows = []
    try:
        for name, args in (list(LAUNCHERS.items())[:2] if quick else LAUNCHERS.items()):
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                result = subprocess.run([sys.executable, "-m", "sweep", "-m", *args, *GRID, f"output_root={out}"],
                                        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
                wall = time.perf_counter() - started
                if result.returncode != 0:
                    print(f"{name}: failed ({result.stderr.strip().splitlines()[-1:]})")
                    continue
                (sweep_dir,) = [p for p in Path(out).iterdir() if p.is_dir()]
                per_cell, span = _cells(sweep_dir)
                rows.append({"launcher": name, "wall s": wall, "trials span s": span,
                             "overhead s": wall - span, "s per cell (mean)": per_cell.mean()})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"grid: {' '.join(GRID)}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the end")
    for row in rows:
        key = row["launcher"].split(" ")[0]
        figures[f"launcher_overhead_s_{key}"] = row["overhead s"]
        figures[f"s_per_cell_{key}"] = row["s per cell (mean)"]
    return figures
