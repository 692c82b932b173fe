"""Report figures (matplotlib, Agg): PNG for the Markdown report, SVG for papers.

Each figure is readable on its own: a title saying what and over which trials,
axis labels with units, and n in every category label.  Large sweeps are cut
to the ``max_cells`` most relevant cells (the title says so) so labels stay
legible.  Figures read the numbers from the tables' frames, never recompute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.columns import THROUGHPUT, TTFT  # noqa: E402
from analysis.tables import Analysis  # noqa: E402

MAX_CELLS = 30
LABEL_CHARS = 70
VERDICT_COLOURS = {"faster": "#1a9850", "slower": "#d73027"}


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _labels(an: Analysis, keys: pd.Index, n: pd.Series) -> list[str]:
    cells = an.cells.loc[keys]
    base = cells["cell"] if not an.multi_dataset else cells["dataset"] + ": " + cells["cell"]
    return [_short(f"{b} (n={int(k)})") for b, k in zip(base, n.loc[keys])]


def _save(fig: plt.Figure, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _height(rows: int) -> float:
    return max(3.0, 0.32 * rows + 1.5)


def _cell_rows(an: Analysis, keys: pd.Index, metric: str) -> tuple[plt.Figure, plt.Axes, np.ndarray]:
    """A figure with one labelled row per cell (label carries the cell's n)."""
    fig, ax = plt.subplots(figsize=(10, _height(len(keys))))
    y = np.arange(len(keys))
    ax.set_yticks(y, _labels(an, keys, an.cellstats[f"{metric}:n"]), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig, ax, y


def throughput_cells(an: Analysis, out: Path, max_cells: int = MAX_CELLS) -> list[Path]:
    """Mean throughput per cell with its CI as error bars (best cells when there are many)."""
    cs = an.cellstats
    if f"{THROUGHPUT}:mean" not in cs:
        return []
    s = cs[f"{THROUGHPUT}:mean"].dropna().sort_values(ascending=False)
    keys = s.index[:max_cells][::-1]
    mean = cs.loc[keys, f"{THROUGHPUT}:mean"].to_numpy()
    lo = cs.loc[keys, f"{THROUGHPUT}:ci_lo"].to_numpy()
    hi = cs.loc[keys, f"{THROUGHPUT}:ci_hi"].to_numpy()
    err = np.vstack([mean - lo, hi - mean])
    fig, ax, y = _cell_rows(an, keys, THROUGHPUT)
    ax.errorbar(mean, y, xerr=np.nan_to_num(err), fmt="o", color="#2c7fb8", ecolor="#555", capsize=3)
    ax.set_xlabel("throughput (tok/s), mean with 95 % CI")
    sub = f"top {len(keys)} of {len(s)} cells" if len(s) > len(keys) else f"{len(s)} cells"
    ax.set_title(f"Throughput per cell ({sub}; n = measured trials)")
    return _save(fig, out, "throughput_per_cell")


def ttft_distribution(df: pd.DataFrame, an: Analysis, out: Path, max_cells: int = MAX_CELLS) -> list[Path]:
    """TTFT distribution per cell: box plot with the individual trials as a jittered strip."""
    cs = an.cellstats
    if f"{TTFT}:mean" not in cs:
        return []
    s = cs[f"{TTFT}:p50"].dropna().sort_values()
    keys = s.index[:max_cells][::-1]
    m = df.loc[df["measured"] & df["cell_key"].isin(keys) & df[TTFT].notna(), ["cell_key", TTFT]]
    groups = m.groupby("cell_key")[TTFT]
    data = [groups.get_group(k).to_numpy() if k in groups.groups else np.array([]) for k in keys]
    fig, ax, y = _cell_rows(an, keys, TTFT)
    ax.boxplot(data, positions=y, orientation="horizontal", widths=0.6, showfliers=False, manage_ticks=False,
               medianprops={"color": "#d95f02"})
    rng = np.random.default_rng(0)
    for yi, d in zip(y, data):
        if d.size > 200:
            d = rng.choice(d, 200, replace=False)
        ax.scatter(d, yi + rng.uniform(-0.2, 0.2, d.size), s=6, alpha=0.4, color="#1b9e77", zorder=3)
    ax.set_xlabel("time to first token (ms)")
    sub = f"{len(keys)} lowest-median of {len(s)} cells" if len(s) > len(keys) else f"{len(s)} cells"
    ax.set_title(f"TTFT distribution per cell ({sub}; box = quartiles, dots = trials)")
    return _save(fig, out, "ttft_distribution")


def latency_percentiles(an: Analysis, out: Path, max_cells: int = MAX_CELLS) -> list[Path]:
    """TTFT and e2e p50 / p95 / p99 per cell, one panel each: how long the tail is beside the median."""
    t = an.get("latency_percentiles")
    if t is None:
        return []
    f = t.frame
    panels = [lab for lab in ("TTFT ms", "e2e ms") if f"{lab} p99" in f.columns and f[f"{lab} p99"].notna().any()]
    if not panels:
        return []
    order = f[f"{panels[-1]} p99"].fillna(np.inf).sort_values(kind="mergesort").index[:max_cells][::-1]
    labels = [_short(f"{c} (n={int(n)})") for c, n in zip(
        (f["dataset"] + ": " + f["cell"]) if "dataset" in f.columns else f["cell"], f["n"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), _height(len(order))), squeeze=False,
                             sharey=True)
    y = np.arange(len(order))
    for ax, lab in zip(axes[0], panels):
        ps = np.vstack([f.loc[order, f"{lab} {p}"].to_numpy(float) for p in ("p50", "p95", "p99")])
        ax.hlines(y, np.nanmin(ps, axis=0), np.nanmax(ps, axis=0), color="#999", lw=1)
        for row, (p, marker, colour) in enumerate((("p50", "o", "#1b9e77"), ("p95", "^", "#7570b3"),
                                                   ("p99", "x", "#d95f02"))):
            ax.scatter(ps[row], y, marker=marker, color=colour, label=p, zorder=3)
        ax.set_xlabel(f"{lab.split()[0]} (ms), percentile over trials")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, [labels[i] for i in order], fontsize=8)
    axes[0][-1].legend(loc="best", fontsize=8)
    shown = len(order)
    sub = f"{shown} of {len(f)} cells with the lowest p99" if len(f) > shown else f"{len(f)} cells"
    fig.suptitle(f"Latency percentiles per cell ({sub}; n = measured trials)")
    fig.tight_layout()
    return _save(fig, out, "latency_percentiles")


def sensitivity(an: Analysis, out: Path) -> list[Path]:
    """One figure per swept parameter: marginal mean ± CI of throughput and TTFT per level."""
    t = an.get("sensitivity_levels")
    if t is None:
        return []
    lv = t.frame
    paths: list[Path] = []
    panels = [(lab, unit) for lab, unit in (("tok/s", "throughput (tok/s)"), ("TTFT ms", "TTFT (ms)"))
              if f"{lab} mean" in lv.columns]
    ci = next((c.split(" ")[-2] for c in lv.columns if c.endswith(" lo")), "CI95")
    for param, g in lv.groupby("parameter", sort=False):
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, (lab, unit) in zip(axes[0], panels):
            x = np.arange(len(g))
            mean = g[f"{lab} mean"].to_numpy(float)
            err = np.vstack([mean - g[f"{lab} {ci} lo"].to_numpy(float), g[f"{lab} {ci} hi"].to_numpy(float) - mean])
            ax.errorbar(x, mean, yerr=np.nan_to_num(err), fmt="o-", capsize=4, color="#2c7fb8")
            ax.set_xticks(x, [f"{lv_}\n(n={int(n)})" for lv_, n in zip(g["level"], g[f"{lab} n"])], fontsize=8)
            ax.set_xlabel(str(param))
            ax.set_ylabel(f"{unit}, marginal mean ± 95 % CI")
            ax.grid(alpha=0.3)
        fig.suptitle(f"Sensitivity to {param} (n = trials per level)")
        fig.tight_layout()
        paths += _save(fig, out, f"sensitivity_{param}")
    return paths


def forest(an: Analysis, out: Path, max_rows: int = 40) -> list[Path]:
    """Forest plot of Δ % (chimera vs baseline) with CIs, coloured by verdict."""
    t = an.get("baseline_vs_chimera")
    if t is None:
        return []
    f = t.frame
    ci = next(c for c in f.columns if c.startswith("Δ % CI") and c.endswith(" lo"))[: -len(" lo")]
    metrics = list(dict.fromkeys(f["metric"]))
    rows = max(min(int((f["metric"] == m).sum()), max_rows) for m in metrics)
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), _height(rows)), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        g = f[f["metric"] == metric].sort_values("Δ %", key=lambda s: s.abs(), ascending=False).head(max_rows)
        g = g.sort_values("Δ %")
        y = np.arange(len(g))
        pct = g["Δ %"].to_numpy(float)
        err = np.vstack([pct - g[f"{ci} lo"].to_numpy(float), g[f"{ci} hi"].to_numpy(float) - pct])
        colours = [VERDICT_COLOURS.get(v, "#777777") for v in g["verdict"]]
        for yi, p, e0, e1, c in zip(y, pct, err[0], err[1], colours):
            ax.errorbar(p, yi, xerr=[[np.nan_to_num(e0)], [np.nan_to_num(e1)]], fmt="s", color=c, capsize=3)
        name = g["dataset"] + ": " + g["cell"] if "dataset" in g else g["cell"]
        ax.set_yticks(y, [_short(f"{c} (n={int(n)})") for c, n in zip(name, g["n chimera"])], fontsize=8)
        ax.axvline(0, color="black", lw=1)
        better = "higher" if metric == "tok/s" else "lower"
        ax.set_xlabel(f"Δ {metric} vs baseline (%), 95 % CI  ({better} is better)")
        ax.set_title(f"{metric}: chimera vs baseline")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Baseline vs chimera (green = faster, red = slower, grey = no significant difference)")
    fig.tight_layout()
    return _save(fig, out, "baseline_vs_chimera_forest")


def concurrency_speedup(an: Analysis, out: Path, max_cells: int = MAX_CELLS) -> list[Path]:
    """Speedup (against agents run alone) and TR114 speedup per multi-agent cell, side by side, with CIs.

    Side by side because they disagree exactly where it matters: on one server that
    serialises requests the speedup is ≈ 1 while the TR114 figure still reads ≈ N.
    """
    c = an.concurrency
    if c is None or c.empty:
        return []
    c = c.head(max_cells).iloc[::-1]
    fig, ax = plt.subplots(figsize=(10, _height(len(c))))
    y = np.arange(len(c))
    for name, colour, dy, label in (("speedup", "#2c7fb8", 0.15, "speedup vs agents alone"),
                                    ("tr114", "#d95f02", -0.15, "tr114 speedup (Σ own workflow ÷ wall)")):
        mean = c[name].to_numpy(float)
        err = np.vstack([mean - c[f"{name}_lo"].to_numpy(float), c[f"{name}_hi"].to_numpy(float) - mean])
        ax.errorbar(mean, y + dy, xerr=np.nan_to_num(err), fmt="o", color=colour, ecolor=colour, capsize=3,
                    label=label)
    ax.scatter(c["agents"], y, marker="|", s=200, color="#555", label="agents (ideal)")
    ax.set_yticks(y, [_short(f"{lab} (runs={int(r)})") for lab, r in zip(c["label"], c["runs"])], fontsize=8)
    ax.axvline(1, color="black", lw=0.8)
    ax.set_xlabel("speedup, mean with 95 % CI over concurrent runs")
    ax.set_title("Concurrency: speedup against agents alone vs the TR114 figure")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, out, "concurrency_speedup")


def load_curves(an: Analysis, out: Path, max_settings: int = 12) -> list[Path]:
    """Throughput vs latency per setting (one panel each, a point per level), each cell's capacity marked.

    x: the achieved throughput (successful requests per second of the run); y: TTFT and e2e p50/p95, from
    the scheduled send time.  A knee cell's capacity (the mean over its searches) is a star on the run level
    nearest to it, with a dotted line at that level's throughput; the legend gives the capacity itself.
    """
    levels_t, cap_t = an.get("load_levels"), an.get("load_capacity")
    if levels_t is None or levels_t.frame.empty:
        return []
    levels = levels_t.frame
    caps = cap_t.frame if cap_t is not None else pd.DataFrame(columns=["cell", "capacity"])
    settings = list(dict.fromkeys(levels["setting"]))[:max_settings]
    cols = min(3, len(settings))
    rows = -(-len(settings) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, settings):
        mine = levels.loc[levels["setting"] == name].sort_values("level")
        x = mine["throughput_req_s"].to_numpy(float)
        for column, style, label in (("ttft_p50_ms", "o-", "TTFT p50"), ("ttft_p95_ms", "o--", "TTFT p95"),
                                     ("e2e_p50_ms", "s-", "e2e p50"), ("e2e_p95_ms", "s--", "e2e p95")):
            ax.plot(x, mine[column].to_numpy(float), style, ms=4, label=label)
        for cell in mine["cell"].unique():
            cap = caps.loc[caps["cell"] == cell, "capacity"]
            if cap.empty or not np.isfinite(cap.iloc[0]):
                continue
            unit = "in flight" if mine["loop"].iloc[0] == "closed" else "req/s"
            at = mine.loc[(mine["cell"] == cell)]
            nearest = at.iloc[(at["level"] - cap.iloc[0]).abs().argsort()[:1]]
            ax.axvline(float(nearest["throughput_req_s"].iloc[0]), color="#d73027", lw=1, ls=":")
            ax.plot(nearest["throughput_req_s"], nearest["e2e_p95_ms"], "*", ms=14, color="#d73027",
                    label=f"capacity {cap.iloc[0]:.3g} {unit}")
        ax.set_yscale("log")
        ax.set_xlabel("throughput, successful req/s")
        ax.set_ylabel("latency from scheduled send, ms")
        ax.set_title(_short(name, 48), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(settings):]:
        ax.set_visible(False)
    more = f" (first {max_settings} of {levels['setting'].nunique()} settings)" if levels["setting"].nunique() > max_settings else ""
    fig.suptitle("Load: throughput vs latency per level, capacity marked" + more)
    fig.tight_layout()
    return _save(fig, out, "load_curves")


def pick_trace_cell(traces: pd.DataFrame, wanted: str | None) -> str | None:
    """The cell to draw: the first whose label contains ``wanted``, else the one with most samples."""
    counts = traces["cell"].value_counts()
    if wanted:
        matches = [c for c in counts.index if wanted in c]
        return matches[0] if matches else None
    return counts.index[0] if len(counts) else None


# (column, axis label, how samples of several GPUs combine) — GPU series first, CPU when there is no GPU
_GPU_SERIES = (("gpu_power_w", "GPU power (W, sum)", "sum"), ("gpu_util_pct", "GPU utilisation (%, mean)", "mean"))
_CPU_SERIES = (("cpu_pct_process", "server CPU (%, 100 = one core)", "first"),
               ("server_rss_mb", "server RSS (MB)", "first"))


def telemetry_over_time(traces: pd.DataFrame, cell: str, out: Path) -> list[Path]:
    """Power and utilisation (or server CPU and memory without a GPU) across one cell's trials.

    Trials are laid end to end on one time axis (seconds since the cell's first
    request), warm-ups shaded, so a cold start or thermal drift is visible.
    """
    d = traces[traces["cell"] == cell].copy()
    gpu = d["gpu_power_w"].notna().any() or d["gpu_util_pct"].notna().any()
    series = _GPU_SERIES if gpu else _CPU_SERIES
    t0 = d["started_at"].min()
    d["time_s"] = (d["started_at"] - t0).dt.total_seconds() + d["t_s"]
    keys = ["started_at", "trial", "warmup", "attempt", "t_s", "time_s"]
    fig, axes = plt.subplots(len(series), 1, figsize=(10, 2.4 * len(series) + 0.8), sharex=True)
    for ax, (column, label, how) in zip(np.atleast_1d(axes), series):
        s = d.groupby(keys, sort=True)[column].agg(how).dropna().reset_index()
        for _, trial in s.groupby(["started_at", "attempt"]):
            colour = "#999" if trial["warmup"].iloc[0] else "#2c7fb8"
            ax.plot(trial["time_s"], trial[column], marker=".", ms=3, lw=1, color=colour)
            if trial["warmup"].iloc[0]:
                ax.axvspan(trial["time_s"].min(), trial["time_s"].max(), color="#ddd", alpha=0.5, lw=0)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[-1].set_xlabel("time since the cell's first request (s); grey = warm-up trials")
    source = "NVML" if gpu else "psutil (no GPU telemetry)"
    fig.suptitle(_short(f"Telemetry over time: {cell} ({source})", 110))
    fig.tight_layout()
    return _save(fig, out, "telemetry_over_time")


def search(an: Analysis, out: Path) -> list[Path]:
    """Optimisation history (each visited cell, best so far) and parameter importance, side by side."""
    hist, imp = an.get("search_history"), an.get("search_importance")
    if hist is None:
        return []
    h = hist.frame
    value = [c for c in h.columns if c.endswith(" mean")][0]
    fig, axes = plt.subplots(1, 2 if imp is not None else 1, figsize=(11 if imp is not None else 6, 3.6),
                             squeeze=False)
    ax = axes[0][0]
    ax.plot(h["step"], h[value], "o", color="#4575b4", label="cell")
    ax.step(h["step"], h["best so far"], where="post", color="#d73027", label="best so far")
    ax.set_xlabel("step (visit order)")
    ax.set_ylabel(value)
    ax.set_title("Optimisation history")
    ax.legend()
    if imp is not None:
        ax = axes[0][1]
        f = imp.frame.iloc[::-1]
        ax.barh(f["parameter"], f["η² (share of variance)"], color="#4575b4")
        ax.set_xlim(0, 1)
        ax.set_xlabel("η² (share of the objective's variance)")
        ax.set_title("Parameter importance")
    fig.tight_layout()
    return _save(fig, out, "search")


def _drawn(skipped: dict[str, list[str]], key: str, name: str, draw: Callable[[], list[Path]]) -> list[Path]:
    """``draw()``'s files, or none and one line in ``skipped[key]`` saying why it could not be drawn.

    Why: a figure is an illustration of tables that are already written; one that
    cannot be drawn (data matplotlib refuses, a cell with nothing to plot) must
    not take the whole report down with it.
    """
    try:
        return draw()
    except Exception as exc:  # noqa: BLE001 - any drawing failure: the report goes on without this figure
        plt.close("all")
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        skipped.setdefault(key, []).append(f"{name} could not be drawn ({type(exc).__name__}: {reason}).")
        return []


def make_all(df: pd.DataFrame, an: Analysis, out: Path, traces: pd.DataFrame | None = None,
             telemetry_cell: str | None = None) -> tuple[dict[str, list[Path]], dict[str, list[str]]]:
    """Every figure, keyed by the report section it belongs to; and per section, the figures skipped and why."""
    skipped: dict[str, list[str]] = {}
    figs = {
        "comprehensive": _drawn(skipped, "comprehensive", "throughput per cell", lambda: throughput_cells(an, out))
        + _drawn(skipped, "comprehensive", "TTFT distribution", lambda: ttft_distribution(df, an, out)),
        "latency": _drawn(skipped, "latency", "latency percentiles", lambda: latency_percentiles(an, out)),
        "baseline_vs_chimera": _drawn(skipped, "baseline_vs_chimera", "forest plot", lambda: forest(an, out)),
        "sensitivity": _drawn(skipped, "sensitivity", "sensitivity", lambda: sensitivity(an, out)),
        "concurrency": _drawn(skipped, "concurrency", "concurrency speedup", lambda: concurrency_speedup(an, out)),
        "load": _drawn(skipped, "load", "throughput vs latency", lambda: load_curves(an, out)),
    }
    if an.get("search_history") is not None:
        figs["search"] = _drawn(skipped, "search", "search history", lambda: search(an, out))
    if traces is not None and len(traces):
        cell = pick_trace_cell(traces, telemetry_cell)
        if cell is not None:
            figs["telemetry"] = _drawn(skipped, "telemetry", "telemetry over time",
                                       lambda: telemetry_over_time(traces, cell, out))
    return figs, skipped
