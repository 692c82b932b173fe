"""Regression gate: ``python -m analysis NEW --against OLD --gate [--min-delta-pct 5]``.

Why: an inference stack's CI wants one question answered — did this build make
any configuration slower? — with an exit code, and without false alarms from
noise.  Cells of the two sweeps are paired by what they measured (model,
workload, model state and every option), never by label or sweep id, so two
runs of the same grid pair up even when their labels or servers differ.  Two
tests per headline metric:

- per cell: Welch's t-test of NEW against OLD in each pair (a change confined
  to one configuration);
- sweep-wide: the geometric mean over the pairs of NEW / OLD, tested by a
  one-sample t-test on the log ratios across pairs (df = pairs − 1).  A uniform
  slowdown that no single 3-trial cell can show is plain across five cells:
  the spread it is judged against is how much the ratio varies between cells,
  not the noise of one cell.

All p-values (cells × metrics plus one sweep-wide row per metric) are one Holm
family, so the gate's chance of a false alarm stays at α.  A *regression* is a
row whose change is in the worse direction, at least ``min_delta_pct`` of OLD's
mean, and significant after correction.  Δ % intervals are on the log-ratio
scale, so they never reach −100 %.

Each row also states its minimum detectable effect (:mod:`analysis.power`) at
α / m, the level one effect must reach after Holm over m tests.  When, for a
metric, not even the most sensitive of its tests could detect ``min_delta_pct``,
a pass would claim more than the data shows: the gate is *inconclusive*.

Exit codes (see :mod:`analysis.__main__`): 1 when there is a regression, 3 when
the gate is inconclusive, 0 otherwise, 2 on bad input (nothing to pair, a side
with two cells of the same parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import distributions, intervals, power, stats
from analysis.columns import HEADLINE, OPTION_KEYS, Metric
from analysis.load import ROW_STATE, WARM, InputError, Loaded, format_level

# What a cell measured: the pairing key (label, preset, sweep id and server address are left out).
PAIR_KEYS: tuple[str, ...] = ("model", "workload", ROW_STATE) + OPTION_KEYS


PASS, REGRESSION, INCONCLUSIVE = 0, 1, 3     # exit codes; 2 (bad input) is analysis.__main__'s
SWEEP_WIDE = "sweep-wide"


@dataclass
class GateResult:
    """The comparison table and its verdict."""

    table: pd.DataFrame
    regressions: int
    unpaired_new: list[str]
    unpaired_old: list[str]
    inconclusive: str = ""      # "" or why a pass would claim too much (the metric whose MDE exceeds the minimum)
    detectable: dict[str, float] = field(default_factory=dict)   # metric → MDE % of its keenest test

    @property
    def exit_code(self) -> int:
        """1 on a regression, else 3 when inconclusive, else 0."""
        if self.regressions:
            return REGRESSION
        return INCONCLUSIVE if self.inconclusive else PASS

    def verdict(self, min_delta_pct: float) -> str:
        """The one line the gate ends with."""
        if self.regressions:
            return f"{self.regressions} significant regression(s) ≥ {min_delta_pct:g} %"
        if self.inconclusive:
            return self.inconclusive
        seen = ", ".join(f"{m} {v:.1f} %" for m, v in self.detectable.items() if np.isfinite(v))
        return f"0 significant regression(s) ≥ {min_delta_pct:g} %" + (f" (MDE {seen})" if seen else "")


def _keyed(loaded: Loaded, side: str) -> pd.DataFrame:
    """One row per cell of ``loaded`` with its pairing key; bad input when two cells share a key."""
    df = loaded.frame
    if ROW_STATE not in df.columns:           # a sweep from before model states: all warm
        df = df.assign(**{ROW_STATE: WARM})
    keys = [k for k in PAIR_KEYS if k in df.columns]
    cells = df.drop_duplicates("cell_key")[["cell_key", "cell", *keys]].copy()
    cells["pair"] = [
        " ".join(f"{k}={format_level(k, v)}" for k, v in zip(keys, row) if not pd.isna(v))
        for row in cells[keys].itertuples(index=False)
    ]
    dup = cells["pair"].duplicated(keep=False)
    if dup.any():
        names = ", ".join(sorted(cells.loc[dup, "cell"].astype(str).unique())[:4])
        raise InputError(f"{side} holds several cells with the same model and parameters ({names}): "
                         f"pass one sweep per side")
    return cells.set_index("cell_key")


def _moments(loaded: Loaded, column: str) -> pd.DataFrame:
    """n, mean, sample variance per cell over the measured trials only (warm-ups and failures excluded)."""
    m = loaded.frame.loc[loaded.frame["measured"]]
    g = m.groupby("cell_key")[column]
    return pd.DataFrame({"n": g.count(), "mean": g.mean(), "var": g.var(ddof=1)})


def _cell_rows(metric: Metric, pairs: pd.DataFrame, a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    """Welch per pair: Δ % of OLD's mean, its CI on the log-ratio scale, p, and the test's standard error."""
    w = stats.welch(a[0], a[1], a[2], b[0], b[1], b[2])
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = w["diff"] / np.abs(a[1]) * 100
        se = np.sqrt(a[2] / a[0] + b[2] / b[0])
    lo, hi = intervals.pct_interval(a[0], a[1], a[2], b[0], b[1], b[2], 0.95)   # the report's Δ % interval
    return pd.DataFrame({
        "cell": pairs["cell_new"].to_numpy(), "cell old": pairs["cell_old"].to_numpy(), "metric": metric.label,
        "test": "cell", "n old": a[0], "n new": b[0], "mean old": a[1], "mean new": b[1], "Δ %": pct,
        "Δ % CI95 lo": lo, "Δ % CI95 hi": hi,
        "p": w["p"], "_se": se, "_df": w["df"], "_log": False,
    })


def _sweep_wide_row(metric: Metric, a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    """One row: geometric mean of NEW / OLD over the pairs, its t-interval and p across pairs (on log ratios).

    Pairs with a non-positive or missing mean on either side are left out (no ratio).
    """
    ok = (a[1] > 0) & (b[1] > 0) & np.isfinite(a[1]) & np.isfinite(b[1])
    r = np.log(b[1][ok] / a[1][ok])
    k = int(ok.sum())
    centre = float(r.mean()) if k else np.nan
    # Two pairs at least, whose ratios differ beyond rounding: else the t-test is undefined (no spread to judge by).
    spread = k >= 2 and float(np.ptp(r)) > 1e-12 * max(1.0, abs(centre))
    se = float(r.std(ddof=1) / np.sqrt(k)) if spread else np.nan
    df = k - 1.0 if spread else np.nan
    p = float(2 * distributions.t_sf(abs(centre) / se, df)) if spread else np.nan
    half = float(distributions.t_ppf(0.975, df) * se) if spread else np.nan
    return pd.DataFrame([{
        "cell": f"all {k} pairs (geometric mean)", "cell old": "", "metric": metric.label, "test": SWEEP_WIDE,
        "n old": np.nansum(a[0][ok]), "n new": np.nansum(b[0][ok]),
        "mean old": float(np.exp(np.log(a[1][ok]).mean())) if k else np.nan,
        "mean new": float(np.exp(np.log(b[1][ok]).mean())) if k else np.nan,
        "Δ %": (np.exp(centre) - 1) * 100,
        "Δ % CI95 lo": (np.exp(centre - half) - 1) * 100, "Δ % CI95 hi": (np.exp(centre + half) - 1) * 100,
        "p": p, "_se": se, "_df": df, "_log": True,
    }])


def compare(new: Loaded, old: Loaded, min_delta_pct: float = 5.0, alpha: float = 0.05) -> GateResult:
    """Pair the cells of NEW and OLD, test every headline metric per pair and sweep-wide, give the verdict."""
    kn, ko = _keyed(new, "NEW"), _keyed(old, "OLD")
    pairs = kn.reset_index().merge(ko.reset_index(), on="pair", suffixes=("_new", "_old"))
    unpaired_new = sorted(set(kn["cell"]) - set(pairs["cell_new"]))
    unpaired_old = sorted(set(ko["cell"]) - set(pairs["cell_old"]))
    if pairs.empty:
        raise InputError("no cell of NEW matches a cell of OLD by model and parameters — "
                         "compare two runs of the same grid")
    parts = []
    for metric in HEADLINE:
        c = metric.column
        if c not in new.frame.columns or c not in old.frame.columns:
            continue
        mn, mo = _moments(new, c), _moments(old, c)
        a = mo.reindex(pairs["cell_key_old"]).to_numpy(float).T
        b = mn.reindex(pairs["cell_key_new"]).to_numpy(float).T
        rows = pd.concat([_cell_rows(metric, pairs, a, b), _sweep_wide_row(metric, a, b)], ignore_index=True)
        rows["_higher_is_better"] = metric.higher_is_better
        parts.append(rows)
    if not parts:
        raise InputError("NEW and OLD share no metric column (throughput_tok_s, ttft_ms)")
    t = pd.concat(parts, ignore_index=True)
    t["p adj"] = stats.adjust_pvalues(t["p"].to_numpy(float), "holm")
    worse = np.where(t["_higher_is_better"], -t["Δ %"], t["Δ %"])          # > 0: NEW is worse
    sig = t["p adj"] < alpha
    regression = sig & (worse >= min_delta_pct)
    t["verdict"] = np.select(
        [t["p adj"].isna(), regression, sig & (worse > 0), sig],
        ["insufficient data", "REGRESSION", "slower, below the minimum", "better"],
        "no significant change",
    )
    _add_mde(t, power.family_alpha(alpha, t["p"].to_numpy(float)))
    for c in ("n old", "n new"):
        t[c] = t[c].fillna(0).astype(int)
    why = _inconclusive(t, min_delta_pct) if not regression.any() else ""
    detectable = t.groupby("metric", sort=False)["MDE %"].min().to_dict()
    t = t.drop(columns=["_se", "_df", "_log", "_higher_is_better"])
    return GateResult(t, int(regression.sum()), unpaired_new, unpaired_old, why, detectable)


def _add_mde(t: pd.DataFrame, level: float) -> None:
    """MDE and MDE % per row at the family's level (in place).

    Per-cell rows: Welch's MDE in the metric's unit, % of OLD's mean.  Sweep-wide
    rows: the MDE of the log ratio, as the % change exp(MDE) − 1 (the larger of
    the up and down changes it allows), and in units at OLD's geometric mean.
    """
    m = power.mde_t(t["_se"].to_numpy(float), t["_df"].to_numpy(float), level)
    log = t["_log"].to_numpy(bool)
    old = np.abs(t["mean old"].to_numpy(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = m / old * 100
    pct[log] = np.expm1(m[log]) * 100            # only the log-scale rows: a cell's MDE in ms would overflow exp
    t["MDE"] = np.where(log, pct / 100 * old, m)
    t["MDE %"] = pct


def _inconclusive(t: pd.DataFrame, min_delta_pct: float) -> str:
    """"" when every metric has a test that could detect ``min_delta_pct``, else the sentence saying it could not.

    A metric is covered when its most sensitive test (the sweep-wide one, or the
    least noisy cell) has an MDE % at most the minimum.  A minimum of 0 asks for
    no size, so nothing to be inconclusive about.
    """
    if min_delta_pct <= 0:
        return ""
    best = t.groupby("metric", sort=False)["MDE %"].min()
    blind = best[~(best <= min_delta_pct)]
    if blind.empty:
        return ""
    metric = blind.fillna(np.inf).idxmax()
    mde = blind[metric]
    said = f"MDE {mde:.1f} %" if np.isfinite(mde) else "MDE not computable: fewer than 2 trials or pairs, or no spread"
    return (f"inconclusive: could not detect a {min_delta_pct:g} % change at this n ({said}"
            f"{', ' + metric if len(best) > 1 else ''}) — run more trials or raise --min-delta-pct")


FORMATS = {"mean old": ".2f", "mean new": ".2f", "Δ %": "+.1f", "Δ % CI95 lo": "+.1f", "Δ % CI95 hi": "+.1f",
           "p": ".3g", "p adj": ".3g", "MDE": ".2f", "MDE %": ".1f"}


def note(min_delta_pct: float, alpha: float, tests: int = 1) -> str:
    """What the gate table's columns mean, printed under it."""
    return (f"Cells paired by model, workload, state and options. Δ % = (NEW − OLD) / OLD mean, its CI95 on the "
            f"log-ratio scale (delta method, Welch df; never below −100 %). test 'cell': Welch t-test per pair; "
            f"'{SWEEP_WIDE}': geometric mean of NEW / OLD over the pairs, t-test on the log ratios (df = pairs − 1). "
            f"Holm over all {tests} tests; REGRESSION = worse by ≥ {min_delta_pct:g} % with p adj < {alpha:g}. "
            f"{power.note(alpha, tests)}")
