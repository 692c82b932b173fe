"""Latency percentiles and token timings per cell: what vLLM bench, GuideLLM and llama-bench users read first.

Why a module of its own: the headline tables show the mean tok/s and TTFT; a
serving benchmark's reader looks for the tail (p99) of TTFT and end-to-end
latency, the time per output token (TPOT), the gaps between tokens (ITL) and
the prompt-processing speed beside the decode speed.  This module derives the
per-trial figures the rows do not store (TPOT; prompt tok/s for sweeps older
than its column) and arranges the per-cell numbers :mod:`analysis.cellstats`
computes into two tables.  No statistic is computed here: the intervals are
:func:`analysis.intervals.from_moments`'s (the same as the comprehensive
table's), the percentiles :func:`analysis.cellstats.quantiles`'.

What the numbers are (docs/analysis.md says it for readers):

* **TTFT / e2e p50, p95, p99**: percentiles over the cell's measured trials
  (one value per trial, linear interpolation).  With few trials the p99 is
  close to the slowest trial: it is a percentile of the trials, not of requests
  a production server would see.
* **ITL mean, p50, p99**: each trial stores the mean, median and 99th
  percentile of the gaps between its content chunks; the cell's figure is the
  *mean over trials* of each trial's statistic, with its interval.  The gaps
  themselves are not stored, so a pooled percentile over all of a cell's gaps
  cannot be computed; the mean of per-trial p99s weighs every trial equally
  whatever its length.
* **TPOT**: per trial (e2e − TTFT) / (eval_count − 1) (:func:`sweep.contract.tpot_ms`),
  the cell's mean over trials with its interval.  It counts tokens (the
  server's), where ITL counts chunks: a chunk carrying several tokens makes ITL
  larger than TPOT, and ITL's mean leaves out the time between the last
  content chunk and the final one.
* **prompt tok/s**: the ``prompt_tokens_per_s`` column (prompt_eval_count /
  prompt_eval_duration), mean over trials with its interval, beside the decode
  tok/s (``throughput_tok_s``).
"""

from __future__ import annotations

import pandas as pd

from analysis.base import Options, Table, ci_label, id_columns
from analysis.columns import THROUGHPUT, TTFT, Metric
from sweep.contract import COLUMNS_BY_NAME, prompt_tokens_per_s, tpot_ms

E2E = COLUMNS_BY_NAME["e2e_ms"].name
ITL_MEAN, ITL_P50, ITL_P99 = (COLUMNS_BY_NAME[c].name for c in ("itl_ms_mean", "itl_ms_p50", "itl_ms_p99"))
PROMPT_TPS = COLUMNS_BY_NAME["prompt_tokens_per_s"].name
_PROMPT_PARTS = ("prompt_eval_count", "prompt_eval_duration_ms")
_TPOT_PARTS = (E2E, TTFT, "eval_count")
#: The derived per-trial column (not stored in Parquet: :func:`sweep.contract.tpot_ms` from three stored ones).
TPOT = "tpot_ms"

#: Percentiles over a cell's trials (column suffix ``:p50`` …), for TTFT and e2e.
PERCENTILES: tuple[int, ...] = (50, 95, 99)
PERCENTILE_COLUMNS: tuple[str, ...] = (TTFT, E2E)

#: The per-cell means with intervals of the token-timing table, in its column order; the decode tok/s
#: is the headline ``throughput_tok_s`` (its statistics are the comprehensive table's).
TIMING: tuple[Metric, ...] = (
    Metric(ITL_MEAN, "ITL ms", False, 2),
    Metric(ITL_P50, "ITL p50 ms", False, 2),
    Metric(ITL_P99, "ITL p99 ms", False, 2),
    Metric(TPOT, "TPOT ms", False, 2),
    Metric(PROMPT_TPS, "prompt tok/s", True, 1),
)
DECODE = Metric(THROUGHPUT, "decode tok/s", True, 2)
#: Every per-cell mean with an interval this module adds to the per-cell statistics (e2e's for summary.json).
SUMMARISED: tuple[Metric, ...] = TIMING + (Metric(E2E, "e2e ms", False, 1),)


def add_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``tpot_ms`` per row, and ``prompt_tokens_per_s`` where a row (an older sweep, a CSV) has none (in place)."""
    for c in (ITL_MEAN, ITL_P50, ITL_P99, *_PROMPT_PARTS, *_TPOT_PARTS, PROMPT_TPS):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    if all(c in df.columns for c in _PROMPT_PARTS):
        computed = prompt_tokens_per_s(*(df[c] for c in _PROMPT_PARTS))
        df[PROMPT_TPS] = df[PROMPT_TPS].where(df[PROMPT_TPS].notna(), computed) if PROMPT_TPS in df else computed
    if all(c in df.columns for c in _TPOT_PARTS):
        df[TPOT] = tpot_ms(*(df[c] for c in _TPOT_PARTS))
    return df


def _p(q: int) -> str:
    return f"p{q}"


def percentile_table(cells: pd.DataFrame, cs: pd.DataFrame, multi: bool) -> Table | None:
    """Per cell: TTFT and e2e p50/p95/p99 over its measured trials (None when neither was measured)."""
    present = [c for c in PERCENTILE_COLUMNS if f"{c}:p50" in cs]
    if not present:
        return None
    t = id_columns(cells, cs.index, multi)
    t["n"] = cs["n"].to_numpy(int)
    fmt: dict[str, str] = {}
    for c in present:
        label = "TTFT ms" if c == TTFT else "e2e ms"
        for q in PERCENTILES:
            t[f"{label} {_p(q)}"] = cs[f"{c}:{_p(q)}"].to_numpy()
            fmt[f"{label} {_p(q)}"] = ".1f"
    note = ("Percentiles over each cell's measured trials (one TTFT and one e2e per trial, linear interpolation): "
            "with fewer than 100 trials the p99 lies between the two slowest trials. e2e = request sent → final "
            "chunk received.")
    return Table("latency_percentiles", "Latency percentiles (over trials)", t, fmt, note)


def timing_table(cells: pd.DataFrame, cs: pd.DataFrame, multi: bool, opts: Options) -> Table | None:
    """Per cell: ITL mean/p50/p99, TPOT, prompt tok/s and decode tok/s, each a mean over trials with its CI."""
    from analysis.summaries import add_note_column   # a cycle otherwise: summaries reads the columns this module names

    metrics = [m for m in (*TIMING, DECODE) if f"{m.column}:mean" in cs and cs[f"{m.column}:mean"].notna().any()]
    if not any(m in metrics for m in TIMING):
        return None
    ci = ci_label(opts)
    t = id_columns(cells, cs.index, multi)
    t["n"] = cs["n"].to_numpy(int)
    fmt: dict[str, str] = {}
    for m in metrics:
        c, lab = m.column, m.label
        if (cs[f"{c}:n"] != cs["n"]).any():
            t[f"{lab} n"] = cs[f"{c}:n"].to_numpy(int)
        for stat, head in (("mean", "mean"), ("ci_lo", f"{ci} lo"), ("ci_hi", f"{ci} hi")):
            t[f"{lab} {head}"] = cs[f"{c}:{stat}"].to_numpy()
            fmt[f"{lab} {head}"] = f".{m.decimals}f"
        add_note_column(t, cs, c, lab, ci)
    note = (f"Means over each cell's measured trials, {ci} as in the comprehensive table. ITL = gap between "
            "consecutive content chunks as our client received them; ITL p50/p99 = the mean over trials of each "
            "trial's median / 99th percentile gap (the gaps are not stored, so no pooled percentile). TPOT = "
            "(e2e − TTFT) / (eval_count − 1) per trial: decode time per generated token after the first, on the "
            "server's token count (ITL counts chunks, so it exceeds TPOT when a chunk carries several tokens). "
            "prompt tok/s = prompt_eval_count / prompt_eval_duration (the server's); a cached prompt prefix is "
            "not evaluated again, so a cache hit shows few tokens and a misleading speed. decode tok/s = "
            "eval_count / eval_duration (the headline tok/s).")
    return Table("token_timing", "Inter-token latency, TPOT and token speeds", t, fmt, note)
