"""Agent workloads → per-stage, workflow-total, concurrency and scenario tables, from the columns alone.

Why a module of its own: agent rows carry a second level of structure (LLM
calls grouped into workflows, workflows grouped into concurrent runs) that the
per-cell tables ignore.  Everything here is computed from the trial columns
(``stage``, ``workflow_id``, ``workflow_wall_ms``, ``ingest_ms``, ``run_id``,
``agent_id``, ``agents``, ``scenario``, ``run_wall_ms``, ``run_kind``), never
from the sweep's own state, so a tidy CSV or Parquet from another harness with
the same columns gives the same tables.

Two speedups, because they answer different questions:

- ``speedup`` = Σ over agents of that agent's mean *isolated* workflow time ÷ the
  concurrent run's wall time: how much sooner N workflows finish together than one
  after the other.  ≈ 1 when one server serialises the requests, ≈ N when each
  agent has its own server.  Needs isolated runs (``run_kind=isolated``).
- ``tr114 speedup`` = Σ of each agent's own workflow time *in the concurrent run*
  ÷ the run's wall time, as the TR114 report computes it.  Each agent's own time
  already includes the waiting that contention causes, so it is ≈ N whenever the
  agents overlap, however slow they became: it measures overlap, not gain.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import intervals
from analysis.base import Options, Table, ci_label, id_columns
from analysis.columns import (
    AGENT_ID, AGENTS, INGEST, RUN_ID, RUN_KIND, RUN_WALL, SCENARIO, STAGE, THROUGHPUT, TOKENS, TTFT, WORKFLOW_ID,
    WORKFLOW_WALL,
)
from analysis.load import RELOADED, as_bool

CONCURRENT, ISOLATED = "concurrent", "isolated"
WALL = "e2e_ms"
WORKFLOW_STAGE = "workflow total"
# TR114 calls a pair "contention" below speedup 1.5, i.e. below 75 % efficiency.
CONTENTION_EFFICIENCY_PCT = 75.0


_SUMMARY = ["n", "mean", "ci_lo", "ci_hi", intervals.NOTE]


def _summary(values: pd.Series, keys: list[pd.Series] | pd.Series, opts: Options, positive: bool = True,
             reloaded: pd.Series | None = None) -> pd.DataFrame:
    """Per group: n, mean, the interval of the mean and its note (:func:`analysis.intervals.summary`).

    ``positive``: wall times, tok/s, TTFT, speedups and efficiencies (log-t,
    never below 0); a paired difference of two agents is signed (Student t).
    """
    return intervals.summary(values, keys, positive=positive, reloaded=reloaded, confidence=opts.confidence,
                             ddof=opts.ddof)[_SUMMARY]


def _reloaded(frame: pd.DataFrame) -> pd.Series | None:
    """The rows' ``reloaded`` flags as booleans, when the input has them."""
    return as_bool(frame[RELOADED]) if RELOADED in frame.columns else None


def _add_stat_columns(t: pd.DataFrame, fmt: dict[str, str], label: str, summ: pd.DataFrame, spec: str,
                      ci: str) -> None:
    """``<label> mean``, its bounds and, when a row has words instead of bounds, ``<label> <ci> note`` (in place)."""
    t[f"{label} mean"] = summ["mean"].to_numpy()
    t[f"{label} {ci} lo"] = summ["ci_lo"].to_numpy()
    t[f"{label} {ci} hi"] = summ["ci_hi"].to_numpy()
    for c in (f"{label} mean", f"{label} {ci} lo", f"{label} {ci} hi"):
        fmt[c] = spec
    notes = summ[intervals.NOTE].fillna(intervals.N_TOO_SMALL).to_numpy() if intervals.NOTE in summ else None
    if notes is not None and (notes != "").any():
        t[intervals.note_column(label, ci)] = notes


def _kind(df: pd.DataFrame) -> pd.Series:
    """``run_kind`` with rows from harnesses that have no such column counted as concurrent."""
    if RUN_KIND in df.columns:
        return df[RUN_KIND].astype(object).where(df[RUN_KIND].notna(), CONCURRENT).astype(str)
    return pd.Series(CONCURRENT, index=df.index)


# ---------------------------------------------------------------- per stage + workflow total


def _workflows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per workflow whose every call succeeded (warm-ups excluded).

    tok/s = Σ eval_count ÷ Σ eval_duration (the workflow's decode rate), TTFT = the
    first call's TTFT (what a user waits for), wall = ``workflow_wall_ms``.
    """
    w = df.loc[df[WORKFLOW_ID].notna() & ~df["is_warmup"]].copy()
    w["_kind"] = _kind(w)
    if "started_at" in w.columns:
        w = w.sort_values("started_at", kind="mergesort")
    bad = w.groupby(WORKFLOW_ID)["is_failed"].transform("any")
    w = w.loc[~bad]
    g = w.groupby(["cell_key", "_kind", WORKFLOW_ID], sort=False)
    out = g.agg(wall=(WORKFLOW_WALL, "first"), ttft=(TTFT, "first")).reset_index()
    if TOKENS in w.columns and "eval_duration_ms" in w.columns:
        tok = g[TOKENS].sum(min_count=1).to_numpy(float)
        dur = g["eval_duration_ms"].sum(min_count=1).to_numpy(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["tps"] = np.where(dur > 0, tok / (dur / 1000.0), np.nan)
    else:
        out["tps"] = g[THROUGHPUT].mean().to_numpy(float)
    out["ingest"] = g[INGEST].first().to_numpy(float) if INGEST in w.columns else np.nan
    return out


def _stat_frame(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """{label: per-group summary} → one flat frame with "<label>|<stat>" columns."""
    out = pd.concat(parts, axis=1)
    out.columns = [f"{label}|{stat}" for label, stat in out.columns]
    out.index = out.index.set_names(["cell_key", "_kind", "stage"])
    return out


def stage_table(df: pd.DataFrame, cells: pd.DataFrame, multi: bool, opts: Options) -> Table | None:
    """Per cell (and run kind): one row per stage, then the workflow-total row."""
    if STAGE not in df.columns or not df[STAGE].notna().any():
        return None
    ci = ci_label(opts)
    m = df.loc[df["measured"] & df[STAGE].notna()].copy()
    m["_kind"] = _kind(m)
    keys = [m["cell_key"], m["_kind"], m[STAGE].astype(str)]
    metrics = [(label, col) for label, col in (("tok/s", THROUGHPUT), ("TTFT ms", TTFT), ("wall ms", WALL))
               if col in m.columns]
    frames = [_stat_frame({label: _summary(m[col], keys, opts, reloaded=_reloaded(m)) for label, col in metrics})]
    if WORKFLOW_ID in df.columns and WORKFLOW_WALL in df.columns and df[WORKFLOW_ID].notna().any():
        wf = _workflows(df)
        wkeys = [wf["cell_key"], wf["_kind"], pd.Series(WORKFLOW_STAGE, index=wf.index)]
        wrows = _stat_frame({"tok/s": _summary(wf["tps"], wkeys, opts), "TTFT ms": _summary(wf["ttft"], wkeys, opts),
                             "wall ms": _summary(wf["wall"], wkeys, opts)})
        wrows["ingest ms|mean"] = wf.groupby(["cell_key", "_kind"], sort=False)["ingest"].mean().reindex(
            wrows.index.droplevel("stage")).to_numpy()
        frames.append(wrows)
    rows = pd.concat(frames).reset_index()
    order = {s: i for i, s in enumerate(dict.fromkeys(m[STAGE].astype(str)))}
    order[WORKFLOW_STAGE] = len(order)
    rows["_o"] = rows["stage"].map(order)
    rows = rows.sort_values(["cell_key", "_kind", "_o"], kind="mergesort").reset_index(drop=True)
    t = id_columns(cells, pd.Index(rows["cell_key"]), multi)
    fmt: dict[str, str] = {}
    if (rows["_kind"] == ISOLATED).any():
        t["run kind"] = rows["_kind"].to_numpy()
    t["stage"] = rows["stage"].to_numpy()
    t["n"] = rows[f"{metrics[0][0]}|n"].fillna(0).to_numpy(int)
    for label, spec in (("tok/s", ".2f"), ("TTFT ms", ".1f"), ("wall ms", ".1f")):
        if f"{label}|mean" in rows.columns:
            summ = pd.DataFrame({k: rows[f"{label}|{k}"] for k in ("mean", "ci_lo", "ci_hi", intervals.NOTE)})
            _add_stat_columns(t, fmt, label, summ, spec, ci)
    if "ingest ms|mean" in rows.columns:
        t["ingest ms mean"] = rows["ingest ms|mean"].to_numpy(float)
        fmt["ingest ms mean"] = ".2f"
    note = (f"Measured calls (status ok, not warm-up) per stage; `{WORKFLOW_STAGE}` = one row per workflow whose "
            "calls all succeeded: tok/s = Σ eval_count ÷ Σ eval_duration, TTFT = its first call's, wall = "
            "workflow_wall_ms (ingest + calls + processing); n counts calls for stages, workflows for the total. "
            f"{ci}: {intervals.methods_note([(THROUGHPUT, 'tok/s')])}.")
    return Table("agent_stages", "Agent workflows: per stage and per workflow", t, fmt, note)


# ---------------------------------------------------------------- concurrency


def _agent_ids(s: pd.Series) -> pd.Series:
    """Agent ids as integers (0, 1, …); text ids from other harnesses are numbered in sorted order."""
    num = pd.to_numeric(s, errors="coerce")
    if num.notna().all():
        return num.astype(int)
    codes, _ = pd.factorize(s.astype(str), sort=True)
    return pd.Series(codes, index=s.index)


def _runs(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, agent-runs) of complete runs: every expected agent present, no failed call, not warm-up.

    A harness without ``run_wall_ms`` still gets the tr114 figures when its isolated
    runs are absent; an isolated run without a run wall uses its workflow's wall.
    """
    r = df.loc[df[RUN_ID].notna() & ~df["is_warmup"]].copy()
    r["_kind"] = _kind(r)
    r["_agent"] = _agent_ids(r[AGENT_ID]) if AGENT_ID in r.columns else 0
    for col in (RUN_WALL, AGENTS, TOKENS, THROUGHPUT, TTFT):
        if col not in r.columns:
            r[col] = np.nan
    key = ["cell_key", "_kind", RUN_ID]
    runs = r.groupby(key, sort=False).agg(
        failed=("is_failed", "any"), n_agents=("_agent", "nunique"), run_wall=(RUN_WALL, "max"),
        tokens=(TOKENS, lambda s: s.sum(min_count=1)), declared=(AGENTS, "max")).reset_index()
    runs["agents"] = runs["declared"].fillna(runs["n_agents"]).astype(int)
    expected = np.where(runs["_kind"] == ISOLATED, 1, runs["agents"])
    runs = runs.loc[~runs["failed"] & (runs["n_agents"] == expected)].reset_index(drop=True)
    ag = r.groupby(key + ["_agent"], sort=False).agg(
        wall=(WORKFLOW_WALL, "first"), tps=(THROUGHPUT, "mean"), ttft=(TTFT, "mean")).reset_index()
    ag = ag.merge(runs[key], on=key)
    own = ag.groupby(key, sort=False)["wall"].first()
    fallback = pd.MultiIndex.from_frame(runs[key]).map(own).to_numpy(float)
    runs["run_wall"] = np.where(runs["run_wall"].isna() & (runs["_kind"] == ISOLATED), fallback, runs["run_wall"])
    return runs, ag


def concurrency_tables(df: pd.DataFrame, cells: pd.DataFrame, multi: bool,
                       opts: Options) -> tuple[list[Table], pd.DataFrame | None]:
    """The concurrency table (one row per multi-agent cell) and the scenario summary.

    Also returns the per-cell numbers the speedup figure draws.
    """
    if RUN_ID not in df.columns or WORKFLOW_WALL not in df.columns or not df[RUN_ID].notna().any():
        return [], None
    runs, ag = _runs(df)
    if not (runs["_kind"] == CONCURRENT).any():
        return [], None
    conc, cag, iso_tps = _speedups(runs, ag)
    keys = pd.Index(sorted(conc["cell_key"].unique()))
    t = id_columns(cells, keys, multi)
    fmt: dict[str, str] = {}
    sp = _add_run_columns(t, fmt, conc, cag, iso_tps, keys, opts)
    _add_agent_columns(t, fmt, cag, keys)
    _add_pair_deltas(t, fmt, cag, keys, opts)
    table = Table("concurrency", "Concurrency: speedup against agents run alone, and the TR114 figures", t, fmt,
                  _concurrency_note(ci_label(opts)))
    return [table, scenario_summary(df, t, keys)], _figure_frame(t, conc, sp, keys, opts)


def _speedups(runs: pd.DataFrame, ag: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """(concurrent runs with speedup, efficiency, tr114 and aggregate tok/s; their agent-runs with the
    isolated mean and slowdown; the isolated tok/s per cell)."""
    conc = runs.loc[runs["_kind"] == CONCURRENT].copy()
    iso_runs = runs.loc[runs["_kind"] == ISOLATED]
    iso_ag = ag.loc[ag["_kind"] == ISOLATED]
    iso_mean = iso_ag.groupby(["cell_key", "_agent"])["wall"].mean()
    cag = ag.loc[ag["_kind"] == CONCURRENT].copy()
    cag["iso"] = pd.MultiIndex.from_arrays([cag["cell_key"], cag["_agent"]]).map(iso_mean).to_numpy(float)
    run_key = ["cell_key", RUN_ID]
    per_run = cag.groupby(run_key, sort=False).agg(
        wf_sum=("wall", "sum"), iso_sum=("iso", lambda s: s.sum(min_count=len(s)))).reset_index()
    conc = conc.merge(per_run, on=run_key)
    with np.errstate(invalid="ignore", divide="ignore"):
        conc["speedup"] = conc["iso_sum"] / conc["run_wall"]
        conc["efficiency"] = conc["speedup"] / conc["agents"] * 100
        conc["tr114"] = conc["wf_sum"] / conc["run_wall"]
        conc["tr114_eff"] = conc["tr114"] / conc["agents"] * 100
        conc["agg_tps"] = conc["tokens"] / (conc["run_wall"] / 1000)
        cag["slowdown"] = cag["wall"] / cag["iso"]
        iso_tps = (iso_runs["tokens"] / (iso_runs["run_wall"] / 1000)).groupby(iso_runs["cell_key"]).mean()
    return conc, cag, iso_tps


def _add_run_columns(t: pd.DataFrame, fmt: dict[str, str], conc: pd.DataFrame, cag: pd.DataFrame,
                     iso_tps: pd.Series, keys: pd.Index, opts: Options) -> pd.DataFrame:
    """Per cell over its concurrent runs: agents, runs, speedup/efficiency with CIs, slowdown, tok/s and the
    TR114 figures (in place); returns the speedup summary the figure draws."""
    ci = ci_label(opts)
    ck = conc["cell_key"]
    by_cell = conc.groupby("cell_key")
    sp, ef = _summary(conc["speedup"], ck, opts).reindex(keys), _summary(conc["efficiency"], ck, opts).reindex(keys)
    for summ in (sp, ef):                       # no isolated run of the cell: nothing to compare the runs with
        summ.loc[~(summ["n"] > 0), intervals.NOTE] = "no isolated runs"
    tre = by_cell["tr114_eff"]
    t["agents"] = by_cell["agents"].max().reindex(keys).to_numpy(int)
    t["runs"] = by_cell.size().reindex(keys).to_numpy(int)
    _add_stat_columns(t, fmt, "speedup", sp, ".3f", ci)
    _add_stat_columns(t, fmt, "efficiency %", ef, ".2f", ci)
    t["slowdown mean"] = cag.groupby("cell_key")["slowdown"].mean().reindex(keys).to_numpy(float)
    t["aggregate tok/s mean"] = by_cell["agg_tps"].mean().reindex(keys).to_numpy(float)
    t["isolated tok/s mean"] = iso_tps.reindex(keys).to_numpy(float)
    t["tr114 speedup mean"] = by_cell["tr114"].mean().reindex(keys).to_numpy(float)
    t["tr114 efficiency % mean"] = tre.mean().reindex(keys).to_numpy(float)
    t["tr114 efficiency % sd"] = tre.std(ddof=opts.ddof).reindex(keys).to_numpy(float)
    t["tr114 efficiency % max"] = tre.max().reindex(keys).to_numpy(float)
    t["tr114 efficiency % min"] = tre.min().reindex(keys).to_numpy(float)
    t["tr114 contention runs"] = ((conc["tr114_eff"] < CONTENTION_EFFICIENCY_PCT).groupby(ck).sum()
                                  .reindex(keys).fillna(0).to_numpy(int))
    fmt.update({"slowdown mean": ".3f", "aggregate tok/s mean": ".2f", "isolated tok/s mean": ".2f",
                "tr114 speedup mean": ".3f"})
    fmt.update({f"tr114 efficiency % {s}": ".2f" for s in ("mean", "sd", "max", "min")})
    return sp


def _add_agent_columns(t: pd.DataFrame, fmt: dict[str, str], cag: pd.DataFrame, keys: pd.Index) -> None:
    """Each agent's mean tok/s and TTFT over the concurrent runs (in place)."""
    agent_means = cag.groupby(["cell_key", "_agent"]).agg(tps=("tps", "mean"), ttft=("ttft", "mean"))
    for a in sorted(cag["_agent"].unique()):
        sub = agent_means.xs(a, level="_agent")
        t[f"agent {a} tok/s mean"] = sub["tps"].reindex(keys).to_numpy(float)
        t[f"agent {a} TTFT ms mean"] = sub["ttft"].reindex(keys).to_numpy(float)
        fmt[f"agent {a} tok/s mean"], fmt[f"agent {a} TTFT ms mean"] = ".2f", ".1f"


def _add_pair_deltas(t: pd.DataFrame, fmt: dict[str, str], cag: pd.DataFrame, keys: pd.Index,
                     opts: Options) -> None:
    """Agent 1 − agent 0 tok/s and agent 0 − agent 1 TTFT, paired per run, with CIs (in place)."""
    ci = ci_label(opts)
    pair = cag.loc[cag["_agent"].isin([0, 1])].pivot_table(index=["cell_key", RUN_ID], columns="_agent",
                                                           values=["tps", "ttft"])
    if (("tps", 0) in pair.columns) and (("tps", 1) in pair.columns):
        pk = pd.Series(pair.index.get_level_values("cell_key"), index=pair.index)
        d_tps = _summary(pair[("tps", 1)] - pair[("tps", 0)], pk, opts, positive=False).reindex(keys)
        d_ttft = _summary(pair[("ttft", 0)] - pair[("ttft", 1)], pk, opts, positive=False).reindex(keys)
    else:
        d_tps = d_ttft = pd.DataFrame(np.nan, index=keys, columns=["mean", "ci_lo", "ci_hi"])
        d_tps[intervals.NOTE] = d_ttft[intervals.NOTE] = intervals.N_TOO_SMALL
    _add_stat_columns(t, fmt, "throughput delta", d_tps, ".2f", ci)
    _add_stat_columns(t, fmt, "TTFT delta ms", d_ttft, ".1f", ci)


def _concurrency_note(ci: str) -> str:
    return (
        "One row per multi-agent cell, over complete concurrent runs (every agent's calls ok). "
        "speedup = Σ over agents of that agent's mean isolated workflow_wall_ms ÷ run_wall_ms (how much sooner "
        "the N workflows finish together than one after another; empty without isolated runs); "
        "efficiency % = speedup ÷ agents × 100; slowdown = an agent's workflow_wall_ms ÷ its isolated mean; "
        "aggregate tok/s = Σ eval_count ÷ run wall, isolated tok/s the same over isolated runs. "
        "tr114 speedup = Σ workflow_wall_ms of the run ÷ run_wall_ms, as TR114 computes it: each agent's own time "
        "includes its waiting, so it is ≈ agents whenever the agents overlap (it measures overlap, not gain); "
        f"tr114 contention runs = runs below {CONTENTION_EFFICIENCY_PCT:.0f} % tr114 efficiency. "
        f"throughput delta = agent 1 − agent 0 tok/s, TTFT delta = agent 0 − agent 1, paired per run. "
        f"{ci}: {intervals.NAMES['log-t']} over runs (the isolated means are taken as fixed); "
        f"the two deltas: {intervals.NAMES['t']}; no bounds where the data cannot support them (the note says why)."
    )


def _figure_frame(t: pd.DataFrame, conc: pd.DataFrame, sp: pd.DataFrame, keys: pd.Index,
                  opts: Options) -> pd.DataFrame:
    """The speedup figure's numbers per cell: speedup and tr114 means with their CIs."""
    fig = pd.DataFrame({
        "label": t["cell"].to_numpy(), "agents": t["agents"].to_numpy(),
        "speedup": sp["mean"].to_numpy(), "speedup_lo": sp["ci_lo"].to_numpy(), "speedup_hi": sp["ci_hi"].to_numpy(),
    })
    tr_s = _summary(conc["tr114"], conc["cell_key"], opts).reindex(keys)
    fig["tr114"], fig["tr114_lo"], fig["tr114_hi"] = tr_s["mean"].to_numpy(), tr_s["ci_lo"].to_numpy(), tr_s["ci_hi"].to_numpy()
    fig["runs"] = t["runs"].to_numpy()
    return fig


def scenario_summary(df: pd.DataFrame, conc: pd.DataFrame, keys: pd.Index) -> Table:
    """Mean of the cell means per scenario and agent count."""
    scen = (df.loc[df["cell_key"].isin(keys)].groupby("cell_key")[SCENARIO].first().reindex(keys)
            if SCENARIO in df.columns else pd.Series(np.nan, index=keys))
    c = conc.assign(scenario=scen.fillna("–").astype(str).to_numpy())
    cols = {"speedup mean": "speedup", "efficiency % mean": "efficiency %", "slowdown mean": "slowdown",
            "tr114 speedup mean": "tr114 speedup", "tr114 efficiency % mean": "tr114 efficiency %"}
    g = c.groupby(["scenario", "agents"], sort=True)
    t = g.size().rename("cells").reset_index()
    t["runs"] = g["runs"].sum().to_numpy(int)
    fmt = {}
    for src, name in cols.items():
        t[f"{name} mean of cells"] = g[src].mean().to_numpy(float)
        fmt[f"{name} mean of cells"] = ".2f" if "%" in name else ".3f"
    return Table("concurrency_scenarios", "Concurrency by scenario (mean of cell means)", t, fmt,
                 "Each figure is the unweighted mean of the cells' means in the concurrency table.")


def analyse_agents(df: pd.DataFrame, cells: pd.DataFrame, multi: bool,
                   opts: Options) -> tuple[list[Table], pd.DataFrame | None]:
    """Every agent table present in the data (none for plain prompt sweeps), and the figure's numbers."""
    tables = []
    if (st := stage_table(df, cells, multi, opts)) is not None:
        tables.append(st)
    conc, fig = concurrency_tables(df, cells, multi, opts)
    return tables + conc, fig
