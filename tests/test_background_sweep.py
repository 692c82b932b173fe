"""Acceptance: real sweeps on the embedded engine, a CPU hog beside one cell, and that cell flagged.

Two invocations of ``python -m sweep`` write one sweep (``sweep_id=``): a baseline
cell on the machine as it is, then a chimera cell with busy-loop processes running
beside it (started by this test, so they are neither the sweep's processes nor its
engine's).  The rows carry ``background_cpu_pct`` and ``loadavg_1m``; the
end-of-sweep summary and ``python -m analysis`` name the chimera cell, and the
pair (its baseline ran without the hog).  The hogs are killed in a ``finally`` and
stop by themselves after two minutes anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sweep.contract import BACKGROUND_CPU_FLAG_PCT, RUN_FILE
from tests.fixtures_server import require_engine
from tests.sweep_cli import only_sweep, run_module, run_sweep

pytestmark = pytest.mark.timeout(300)

TINY = ("trials=3", "warmup=1", "chimera.num_predict=8", "sweep_id=hog")
HOG = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end:\n    pass\n"
BUSY = f"ran while other processes used more than {BACKGROUND_CPU_FLAG_PCT:g} % of a core"


def _hogs(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(n)]


def test_a_cpu_hog_beside_one_cell_flags_that_cell(tmp_path: Path) -> None:
    require_engine()
    quiet = run_sweep("chimera=baseline", *TINY, f"output_root={tmp_path}")
    assert quiet.returncode == 0, quiet.stderr
    before = pd.read_parquet(only_sweep(tmp_path))
    assert before["background_cpu_pct"].notna().all() and before["loadavg_1m"].notna().all()   # filled on Linux
    base_pct = before.loc[~before["warmup"], "background_cpu_pct"].mean()
    if base_pct > BACKGROUND_CPU_FLAG_PCT:   # a saturated machine has no spare core for the hog to show on
        pytest.skip(f"the machine is busy already: {base_pct:.0f} % of a core of other processes' CPU during the "
                    f"quiet cell (threshold {BACKGROUND_CPU_FLAG_PCT:g} %)")
    hogs = _hogs(os.cpu_count() or 1)     # one per core: more than the threshold even on a machine busy already
    try:
        time.sleep(0.5)
        loud = run_sweep(*TINY, f"output_root={tmp_path}")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=10)
    assert loud.returncode == 0, loud.stderr
    sweep_dir = only_sweep(tmp_path)
    df = pd.read_parquet(sweep_dir)
    assert df["background_cpu_pct"].notna().all() and df["loadavg_1m"].notna().all()   # filled on Linux
    measured = df.loc[~df["warmup"] & df["status"].eq("ok")]
    means = measured.groupby("preset")["background_cpu_pct"].mean()
    assert means["chimera"] > BACKGROUND_CPU_FLAG_PCT and means["chimera"] > means["baseline"] + 50, means

    # the end-of-sweep summary of the run beside the hog names its cell, and only it
    (summary,) = [ln for ln in loud.stderr.splitlines() if BUSY in ln]
    assert summary.startswith("warning: 1 cell(s)") and summary.endswith(f"({means['chimera']:.0f} %)"), summary
    assert "baseline" not in summary

    report = run_module("analysis", str(sweep_dir), "--no-figures")
    assert report.returncode == 0, report.stderr
    (busy,) = [ln for ln in report.stdout.splitlines() if BUSY in ln]
    assert busy == summary
    text = (sweep_dir / "_report" / "report.md").read_text()
    assert f"**Warning**: {summary.removeprefix('warning: ')}." in text
    assert "compared pair(s) ran beside background CPU differing" in text   # baseline without, chimera with
    assert "**Background load**: other processes' CPU during the calls" in text

    load = json.loads((sweep_dir / RUN_FILE).read_text())["load"]
    assert {"start", "end"} <= set(load) and load["end"]["loadavg_1m"] is not None
