"""What a cell costs besides its requests: a real ``python -m sweep`` multirun against an instant server.

The stand-in answers each request with a few chunks and no delay, so nearly
all of the sweep's wall time is ours: Hydra composing the job, planning, the
pre-flight requests (``/api/version``, ``/api/show``), opening the cell's
store, telemetry, writing Parquet after each trial, the progress output.

``cell_overhead_ms`` = (end of the last trial − start of the first − time
inside requests) / (cells − 1): the steady-state cost per cell, from the
stored rows themselves.  Process start-up (Python, Hydra, imports) is reported
apart (``sweep_startup_s``): it is paid once per sweep, not per cell.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from sweep.testing.standin import Script, StandIn

REPO = Path(__file__).resolve().parent.parent


def measure(cells: int = 50) -> dict[str, float]:
    """Run a ``cells``-cell multirun (1 trial, no warm-up each) and take the overhead from its rows."""
    with StandIn() as standin, tempfile.TemporaryDirectory() as tmp:
        standin.default = Script(tokens=["tok"] * 4, first_token_delay_s=0.0, token_interval_s=0.0)
        argv = [sys.executable, "-m", "sweep", "-m", "backend=ollama", f"backend.base_url={standin.base_url}",
                "model=gemma3", f"chimera.seed=range(0,{cells})", "trials=1", "warmup=0", f"output_root={tmp}"]
        started = time.time()
        result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900,
                                env=dict(os.environ, PYTHONPATH=str(REPO)))
        wall = time.time() - started
        if result.returncode != 0:
            raise RuntimeError(f"the sweep failed: {result.stderr[-1000:]}")
        (sweep_dir,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        df = pd.read_parquet(sweep_dir, columns=["started_at", "e2e_ms", "status"])
    assert len(df) == cells and df["status"].eq("ok").all(), df["status"].value_counts()
    start = df["started_at"].min().timestamp()
    end = max(t.timestamp() + e / 1000 for t, e in zip(df["started_at"], df["e2e_ms"]))
    inside = df["e2e_ms"].sum() / 1000
    return {"cell_overhead_ms": (end - start - inside) / (cells - 1) * 1000,
            "sweep_startup_s": start - started, "sweep_wall_s": wall}
