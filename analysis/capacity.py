"""The load section: each knee cell's capacity with its CI, and goodput and latency percentiles per level.

Why a module of its own: ``workload=load`` rows are requests of load runs, not repeated trials of one
call; they are summarised per run (goodput, achieved throughput) and per level (rate or concurrency),
which no other table does.  Only rows with a ``load_run_id`` count, failed requests included (a
request that failed under load is not good; leaving it out would flatter the level).

Definitions (every number of the section):

- *good* request: ``slo_ok`` (it succeeded and met every SLO set; latencies from the scheduled send);
- a run's *goodput*: good requests / ``load_run_s`` (run start → last response), req/s;
  its *goodput fraction*: good / requests; its *throughput*: successful requests / ``load_run_s``;
- a level's numbers: the mean of its finished runs' goodput, fraction and throughput; latency percentiles
  over all its requests (successful ones: a failed request has no latency), those of a run Ctrl-C
  interrupted included (stored with ``load_run_s`` null: a run without a span has no goodput);
- *capacity* of a knee cell (``load.rates=sweep``): each trial's search ends with one estimate
  (``load_capacity``: the highest level that met ``slo.fraction``); the table gives their mean and the
  log-t interval of that mean over the cell's searches (n − 1 degrees of freedom; a capacity is positive,
  as the report's other means), i.e. how well repeated searches agree on the capacity.  It does not include the search's own
  resolution (``load.tolerance``): with one search, or identical estimates, that is all there is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.base import Options, Table
from analysis.columns import OPTION_KEYS
from analysis.intervals import N_TOO_SMALL, NOTE, note_column, sample_ci

RUN = "load_run_id"
SECTION = "load"
LATENCY_PERCENTILES = (50, 95, 99)


def capacity_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float, str]:
    """(mean, lo, hi, note) of the mean capacity over a cell's searches: the report's one rule for a positive quantity.

    A capacity is a rate or a concurrency, never negative, so its interval is the log-t interval of
    :func:`analysis.intervals.sample_ci`, like every other positive mean in the report (a Student t
    interval of two searches at 0.5 and 2.5 req/s reaches −11).  Where that interval cannot be
    stated (one search; bounds an order of magnitude apart) the bounds are NaN and ``note`` says why.
    Identical values give a zero-width interval at the mean (no spread was observed).
    """
    n, mean, lo, hi, note = sample_ci(np.asarray(values, dtype=float), positive=True, confidence=confidence)
    return (mean, lo, hi, note) if n else (float("nan"), float("nan"), float("nan"), N_TOO_SMALL)


def load_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The requests of load runs (warm-ups out, failures in); empty when the input has none."""
    if RUN not in df.columns or df[RUN].isna().all():
        return df.iloc[0:0]
    return df.loc[df[RUN].notna() & ~df["is_warmup"]].copy()


def _level(rows: pd.DataFrame) -> pd.Series:
    """A run's level: its rate (open loop) or its concurrency (closed loop)."""
    return rows["load_rate"].where(rows["load_loop"] != "closed", rows["load_concurrency"]).astype(float)


def runs(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per load run: its cell, level, requests, good, ok, span, goodput, fraction and throughput."""
    rows = rows.assign(level=_level(rows), good=rows["slo_ok"].fillna(False).astype(bool),
                       ok=rows["status"].eq("ok"))
    per = rows.groupby(RUN, sort=False).agg(
        cell_key=("cell_key", "first"), loop=("load_loop", "first"), level=("level", "first"),
        trial=("trial", "first"), step=("load_step", "first"), requests=("good", "size"), good=("good", "sum"),
        ok=("ok", "sum"), run_s=("load_run_s", "first"), capacity=("load_capacity", "first"),
        knee=("load_knee", "first"), slo=("slo", "first"))
    per["run_s"] = per["run_s"].astype(float)
    per["goodput"] = per["good"] / per["run_s"]
    per["fraction"] = per["good"] / per["requests"]
    per["throughput"] = per["ok"] / per["run_s"]
    return per.reset_index()


def _percentiles(values: pd.Series) -> dict[str, float]:
    v = values.dropna().to_numpy(float)
    return {f"p{p}": float(np.percentile(v, p)) if len(v) else float("nan") for p in LATENCY_PERCENTILES}


def setting(cells: pd.DataFrame, key: object) -> str:
    """What a cell sets apart from its load: dataset, preset, model and options (the series of the figure).

    Why: cells of one setting at several fixed rates (``-m load.rate=1,2,4``) are one curve.
    """
    row = cells.loc[key]
    opts = [f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}"
            for k in OPTION_KEYS if k in cells.columns and pd.notna(row[k])]
    head = [str(row["dataset"])] if cells["dataset"].nunique() > 1 else []
    # the server's slots (backend.parallel) set cells apart too: each slot count is its own curve, named
    # first so that a figure's shortened panel title still tells the curves apart
    slots = ([f"parallel={int(row['server_parallel'])}"] if "server_parallel" in cells.columns
             and pd.notna(row["server_parallel"]) and cells["server_parallel"].nunique() > 1 else [])
    return " ".join(head + slots + [str(row.get("preset", "")), str(row.get("model", ""))] + opts).strip()


def level_frame(rows: pd.DataFrame, per_run: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell and level: runs, requests, mean goodput/fraction/throughput, latency percentiles."""
    rows = rows.assign(level=_level(rows))
    ok = rows.loc[rows["status"].eq("ok")]
    out = []
    for (key, level), group in per_run.groupby(["cell_key", "level"], sort=True):
        mine = ok.loc[(ok["cell_key"] == key) & (ok["level"] == level)]
        done = group.loc[group["run_s"].notna()]      # an interrupted run has no span: no goodput of its own
        rec = {"cell_key": key, "cell": cells.loc[key, "cell"], "setting": setting(cells, key),
               "loop": group["loop"].iloc[0], "level": level, "runs": len(done),
               "requests": int(group["requests"].sum()), "good_fraction": float(done["fraction"].mean()),
               "goodput_req_s": float(done["goodput"].mean()), "throughput_req_s": float(done["throughput"].mean())}
        for name, column in (("ttft", "ttft_ms"), ("e2e", "e2e_ms")):
            for p, value in _percentiles(mine[column]).items():
                rec[f"{name}_{p}_ms"] = value
        rec["itl_p50_ms"] = _percentiles(mine["itl_ms_mean"])["p50"]
        rec["send_delay_p99_ms"] = _percentiles(mine["send_delay_ms"])["p99"]
        out.append(rec)
    return pd.DataFrame(out)


def capacity_frame(per_run: pd.DataFrame, cells: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Per knee cell: searches, capacity mean with its t interval, range, how the searches ended, the SLO."""
    ends = per_run.loc[per_run["knee"].notna()]
    out = []
    for key, group in ends.groupby("cell_key", sort=True):
        mean, lo, hi, note = capacity_ci(group["capacity"].to_numpy(float), confidence)
        knees = group["knee"].value_counts()
        out.append({"cell_key": key, "cell": cells.loc[key, "cell"], "setting": setting(cells, key),
                    "loop": group["loop"].iloc[0],
                    "unit": "requests in flight" if group["loop"].iloc[0] == "closed" else "req/s",
                    "searches": len(group), "capacity": mean, "ci_lo": lo, "ci_hi": hi, NOTE: note,
                    "min": float(group["capacity"].min()), "max": float(group["capacity"].max()),
                    "ended": ", ".join(f"{v} {k}" for k, v in knees.items()), "slo": group["slo"].iloc[0]})
    return pd.DataFrame(out)


def analyse_load(df: pd.DataFrame, cells: pd.DataFrame, opts: Options) -> tuple[list[Table], str]:
    """The section's tables (none without load rows) and a note stating the definitions."""
    rows = load_rows(df)
    if rows.empty:
        return [], ""
    per_run = runs(rows)
    tables = []
    ci = f"CI{round(opts.confidence * 100):d}"
    cap = capacity_frame(per_run, cells, opts.confidence)
    if not cap.empty:
        frame = cap.drop(columns="cell_key").rename(columns={"ci_lo": f"{ci} lo", "ci_hi": f"{ci} hi",
                                                            NOTE: note_column("capacity", ci)})
        tables.append(Table("load_capacity", "Capacity (the knee) per cell", frame,
                            {"capacity": ".3g", f"{ci} lo": ".3g", f"{ci} hi": ".3g", "min": ".3g", "max": ".3g"},
                            note=f"capacity: the highest rate (or concurrency) whose goodput fraction met the SLO's "
                                 f"fraction, one estimate per search (trial); mean and {ci} log-t interval of "
                                 f"that mean over the cell's searches (words instead for one search). `at_high`: a lower "
                                 f"bound (load.high passed); `below_low`: no capacity (load.low failed)."))
    levels = level_frame(rows, per_run, cells).drop(columns="cell_key")
    fmt = {c: ".1f" for c in levels.columns if c.endswith("_ms")}
    fmt.update({"level": ".4g", "good_fraction": ".2f", "goodput_req_s": ".3g", "throughput_req_s": ".3g"})
    tables.append(Table("load_levels", "Goodput and latency per level", levels, fmt,
                        note="level: the offered rate (req/s, open loop) or concurrency (closed loop); goodput: good "
                             "requests per second of the run (start → last response), good = met every SLO; "
                             "latencies count from the scheduled send time (queueing included); means over runs, "
                             "percentiles over the level's successful requests."))
    note = ("Load runs: one row per request; a trial is one load run, or one knee search (load.rates=sweep) "
            "whose runs double the level from load.low until the SLO fails, then bisect.")
    return tables, note
