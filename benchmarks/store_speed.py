"""What storing one trial costs as a cell grows: append-only parts vs rewriting the whole cell file.

Each trial is flushed to disk before the next one starts (so a SIGKILL loses at
most the trial in flight).  Before parts, a flush rewrote the cell's whole file
(temp + fsync + rename), so its cost grew with the cell; now a flush writes
only the new rows as a part, and parts are merged by level (``FANOUT``), which
rewrites each row a few times in total, not once per later trial.

Figures (ms per trial, real files in a temp directory on this machine's disk):

- ``parts_ms_first_10``: median flush cost over the first 10 trials of a cell;
- ``parts_ms_at_end``: median over the last 256 of the cell's N trials (``trials``);
- ``parts_ms_mean``: mean over all N trials (every merge included), and the
  slowest single flush ``parts_ms_max`` (a merge);
- ``rewrite_ms_at_10`` / ``rewrite_ms_at_end``: one whole-file rewrite of a cell
  holding 10 / N rows, i.e. what the 10th / Nth trial cost before parts;
- ``files_at_end`` and ``read_ms_at_end``: files in the cell directory after N
  trials (before the end-of-run merge) and the time to read them back.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from sweep.contract import TrialRecord, to_table, utc_now
from sweep.store import CellStore, read_cell, write_atomic


def _record(trial: int) -> TrialRecord:
    """A realistic row: identity, options, timings, telemetry aggregates and a ~400-char response."""
    return TrialRecord(
        sweep_id="20260101-000000", cell_id="chimera gemma3:270m num_gpu=80 num_ctx=512 temperature=0.8",
        cell_hash="0123456789abcdef", preset="chimera", model="gemma3:270m", backend="embedded",
        base_url="http://127.0.0.1:40123", num_gpu=80, num_ctx=512, temperature=0.8, top_p=0.9, top_k=40,
        repeat_penalty=1.1, workload="report", prompt_id="0", trial=trial, warmup=False, status="ok",
        started_at=utc_now(), ttft_ms=35.2 + trial % 7, itl_ms_mean=20.1, itl_ms_p50=20.0, itl_ms_p99=24.3,
        e2e_ms=1300.5, throughput_tok_s=49.7, client_tok_s=49.1, load_duration_ms=1.2,
        prompt_eval_duration_ms=30.0, eval_duration_ms=1280.0, total_duration_ms=1311.0, prompt_eval_count=12,
        eval_count=64, done_reason="length", response="The report covers throughput and latency. " * 10,
        attempt=1, content_chunks=64, cpu_pct_system=97.0, cpu_pct_process=190.0, server_rss_mb_max=420.0,
        telemetry_samples=13,
    )


def _parts(directory: Path, n: int) -> dict[str, float]:
    store = CellStore(directory / "cell.parquet", {"sweep_id": "bench"})
    costs = []
    for trial in range(n):
        record = _record(trial)
        started = time.perf_counter()
        store.append(record)
        costs.append((time.perf_counter() - started) * 1e3)
    files = len(list(store.path.iterdir()))
    started = time.perf_counter()
    rows = read_cell(store.path).num_rows
    read_ms = (time.perf_counter() - started) * 1e3
    assert rows == n
    return {"parts_ms_first_10": statistics.median(costs[:10]),
            "parts_ms_at_end": statistics.median(costs[-min(256, n):]),
            "parts_ms_mean": statistics.fmean(costs), "parts_ms_max": max(costs),
            "files_at_end": float(files), "read_ms_at_end": read_ms}


def _rewrite_ms(directory: Path, rows: int, reps: int = 3) -> float:
    """The flush before parts: every row of the cell into a new file, atomically."""
    records = [_record(t) for t in range(rows)]
    costs = []
    for _ in range(reps):
        started = time.perf_counter()
        write_atomic(to_table(records), directory / "whole.parquet")
        costs.append((time.perf_counter() - started) * 1e3)
    return statistics.median(costs)


def measure(n: int = 10_000) -> dict[str, float]:
    """Every figure of this benchmark for a cell of ``n`` trials (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="store-bench-", dir=Path.cwd()) as tmp:
        figures = _parts(Path(tmp), n)
        figures["rewrite_ms_at_10"] = _rewrite_ms(Path(tmp), 10)
        figures["rewrite_ms_at_end"] = _rewrite_ms(Path(tmp), n)
    figures["trials"] = float(n)
    return figures


def run(quick: bool = False) -> dict[str, float]:
    """Measure and print; returns the figures for the benchmarks table."""
    f = measure(1_000 if quick else 10_000)
    n = int(f["trials"])
    print(f"store: ms per trial flush (fsync'd), a cell of {n:,} trials")
    print(f"  append-only parts: median of the first 10 trials {f['parts_ms_first_10']:.2f} ms, "
          f"of trials {n - 255:,}–{n:,} {f['parts_ms_at_end']:.2f} ms, "
          f"mean of all {f['parts_ms_mean']:.2f} ms (slowest, a merge: {f['parts_ms_max']:.0f} ms)")
    print(f"  whole-file rewrite (before): at 10 trials {f['rewrite_ms_at_10']:.2f} ms, "
          f"at {n:,} trials {f['rewrite_ms_at_end']:.1f} ms per trial")
    print(f"  growth from 10 to {n:,} trials: parts × "
          f"{f['parts_ms_at_end'] / f['parts_ms_first_10']:.2f}, "
          f"rewrite × {f['rewrite_ms_at_end'] / f['rewrite_ms_at_10']:.1f}")
    print(f"  after {n:,} trials: {f['files_at_end']:.0f} files in the cell, read back in {f['read_ms_at_end']:.0f} ms")
    return f


if __name__ == "__main__":
    run()
