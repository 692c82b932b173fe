"""Regression gate: ``python -m analysis NEW --against OLD --gate [--min-delta-pct 5]``.

Why: an inference stack's CI wants one question answered — did this build make
any configuration slower? — with an exit code, and without false alarms from
noise.  Cells of the two sweeps are paired by what they measured (model,
workload, model state and every option), never by label or sweep id, so two
runs of the same grid pair up even when their labels or servers differ.  For
every pair and headline metric a Welch t-test compares NEW with OLD; the
p-values are Holm-corrected over the whole family; a *regression* is a pair
whose change is in the worse direction, at least ``min_delta_pct`` of OLD's
mean, and significant after correction.

Exit codes (see :mod:`analysis.__main__`): 1 when there is a regression, 0
otherwise, 2 on bad input (nothing to pair, a side with two cells of the same
parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import stats
from analysis.columns import HEADLINE, OPTION_KEYS
from analysis.load import ROW_STATE, WARM, InputError, Loaded, format_level

# What a cell measured: the pairing key (label, preset, sweep id and server address are left out).
PAIR_KEYS: tuple[str, ...] = ("model", "workload", ROW_STATE) + OPTION_KEYS


@dataclass
class GateResult:
    """The comparison table and its verdict."""

    table: pd.DataFrame
    regressions: int
    unpaired_new: list[str]
    unpaired_old: list[str]


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
    m = loaded.frame.loc[loaded.frame["measured"]]
    g = m.groupby("cell_key")[column]
    return pd.DataFrame({"n": g.count(), "mean": g.mean(), "var": g.var(ddof=1)})


def compare(new: Loaded, old: Loaded, min_delta_pct: float = 5.0, alpha: float = 0.05) -> GateResult:
    """Pair the cells of NEW and OLD, test every headline metric, mark the significant regressions."""
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
        w = stats.welch(a[0], a[1], a[2], b[0], b[1], b[2])
        with np.errstate(invalid="ignore", divide="ignore"):
            pct = w["diff"] / np.abs(a[1]) * 100
        worse = -pct if metric.higher_is_better else pct       # > 0: NEW is worse
        parts.append(pd.DataFrame({
            "cell": pairs["cell_new"].to_numpy(), "cell old": pairs["cell_old"].to_numpy(),
            "metric": metric.label, "n old": a[0], "n new": b[0], "mean old": a[1], "mean new": b[1],
            "Δ %": pct, "Δ % CI95 lo": w["ci_lo"] / np.abs(a[1]) * 100, "Δ % CI95 hi": w["ci_hi"] / np.abs(a[1]) * 100,
            "p": w["p"], "_worse": worse,
        }))
    if not parts:
        raise InputError("NEW and OLD share no metric column (throughput_tok_s, ttft_ms)")
    t = pd.concat(parts, ignore_index=True)
    t["p adj"] = stats.adjust_pvalues(t["p"].to_numpy(float), "holm")
    regression = (t["p adj"] < alpha) & (t["_worse"] >= min_delta_pct)
    t["verdict"] = np.select(
        [t["p adj"].isna(), regression, (t["p adj"] < alpha) & (t["_worse"] > 0), t["p adj"] < alpha],
        ["insufficient data", "REGRESSION", "slower, below the minimum", "better"],
        "no significant change",
    )
    t = t.drop(columns="_worse")
    for c in ("n old", "n new"):
        t[c] = t[c].fillna(0).astype(int)
    return GateResult(t, int(regression.sum()), unpaired_new, unpaired_old)


FORMATS = {"mean old": ".2f", "mean new": ".2f", "Δ %": "+.1f", "Δ % CI95 lo": "+.1f", "Δ % CI95 hi": "+.1f",
           "p": ".3g", "p adj": ".3g"}


def note(min_delta_pct: float, alpha: float) -> str:
    """What the gate table's columns mean, printed under it."""
    return (f"Cells paired by model, workload, state and options. Δ % = (NEW − OLD) / OLD mean; Welch t-test, "
            f"Holm over all pairs × metrics; REGRESSION = worse by ≥ {min_delta_pct:g} % with p adj < {alpha:g}.")
