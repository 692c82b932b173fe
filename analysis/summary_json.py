"""``_report/summary.json``: a sweep's per-cell numbers, comparisons, gate result and provenance, without pandas.

Why: a CI job or a notebook that wants "the p99 TTFT of each cell" or "did the
gate pass" should not parse Markdown or load Parquet; GuideLLM users read its
``benchmarks.json`` the same way.  The file holds the numbers the report's
tables print, unrounded (the CSVs carry the rounded ones), with ``null`` where
a table shows nothing.

The schema (:func:`schema`, JSON Schema 2020-12) is written once, here; every
fixed object forbids keys it does not declare, so a key added to the file
without its description fails validation (``tests/test_summary_json.py``), and
``scripts/summary_page.py`` generates docs/summary.md from it.  The metric keys
are the Parquet column names of the data contract (:mod:`sweep.contract`), each
described by the contract's own text.  ``schema_version`` changes when a key is
renamed or removed; new keys keep it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis import intervals, latency
from analysis.base import Analysis, Table
from analysis.columns import OPTION_KEYS, THROUGHPUT, TTFT
from sweep.contract import COLUMNS_BY_NAME

FILE = "summary.json"
SCHEMA_VERSION = 1

#: The metrics of a cell, by column name: the contract's columns, and TPOT (derived per trial).
METRICS: tuple[str, ...] = (THROUGHPUT, TTFT, latency.E2E, latency.ITL_MEAN, latency.ITL_P50, latency.ITL_P99,
                            latency.TPOT, latency.PROMPT_TPS)
_TPOT_DOC = ("time per output token after the first, per trial: (e2e_ms − ttft_ms) / (eval_count − 1); derived "
             "by the analysis, not stored")
#: A metric's statistics: (key, JSON type, meaning).
STATS: tuple[tuple[str, str, str], ...] = (
    ("n", "integer", "measured trials with a value (status ok, not warm-up)"),
    ("mean", "number", "mean over those trials (itl_ms_p50 / itl_ms_p99: the mean of each trial's percentile; the "
                       "gaps themselves are not stored)"),
    ("sd", "number", "standard deviation (sample, ddof=1, unless the analysis ran with --population-sd)"),
    ("cv_pct", "number", "sd / mean × 100"),
    ("ci_lo", "number", "lower bound of the mean's confidence interval (level in analysis.confidence); null when "
                        "ci_note says why there is none"),
    ("ci_hi", "number", "upper bound of that interval"),
    ("ci_note", "string", "empty when the bounds are given, else why not (e.g. `n too small`)"),
    ("p50", "number", "median over the trials (ttft_ms and e2e_ms only; linear interpolation)"),
    ("p95", "number", "95th percentile over the trials (ttft_ms and e2e_ms only)"),
    ("p99", "number", "99th percentile over the trials (ttft_ms and e2e_ms only; with few trials ≈ the slowest)"),
)
IDENTITY: tuple[tuple[str, str], ...] = (
    ("dataset", "the sweep id the cell belongs to (cells are never pooled across datasets)"),
    ("cell", "the cell's label, as the report's tables name it"),
    ("preset", "`baseline` or `chimera`"),
    ("model", "model name as the server knows it"),
    ("workload", "workload name"),
    ("backend", "`embedded`, `ollama`, `openai` or `llama_server`"),
    ("base_url", "server address"),
)


def _nullable(kind: str | list[str], description: str, **extra: Any) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else kind
    return {"type": [*kinds, "null"], "description": description, **extra}


def _closed(description: str, properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties,
            "required": list(required), "additionalProperties": False}


def metric_doc(name: str) -> str:
    """A metric key's meaning: the contract's text (TPOT's is :func:`sweep.contract.tpot_ms`'s formula)."""
    if name == latency.TPOT:
        return _TPOT_DOC
    c = COLUMNS_BY_NAME[name]
    return f"{c.doc} ({c.unit})" if c.unit else c.doc


_ROW = {"type": "object", "additionalProperties": {"type": ["number", "string", "boolean", "null"]}}


def schema() -> dict[str, Any]:
    """The JSON Schema of summary.json: every key with its type and meaning."""
    stat = _closed("statistics of one metric over the cell's measured trials",
                   {k: _nullable(t, d) for k, t, d in STATS}, ["n", "mean"])
    metrics = _closed("per metric (Parquet column name; absent when the sweep did not measure it)",
                      {m: {**stat, "description": metric_doc(m)} for m in METRICS})
    cell = _closed("one cell: its identity, the options it set, its row counts and its metrics", {
        **{k: _nullable("string", d) for k, d in IDENTITY},
        "options": {"type": "object", "description": "the options the cell set (null = not sent: the server's "
                    "default), by option name (docs/columns.md)",
                    "properties": {k: _nullable(["number", "string", "boolean"], metric_doc(k)) for k in OPTION_KEYS},
                    "additionalProperties": False},
        "n": {"type": "integer", "description": "measured trials (status ok, not warm-up)"},
        "failed": {"type": "integer", "description": "failed rows (excluded from the statistics)"},
        "warmups": {"type": "integer", "description": "warm-up rows (excluded from the statistics)"},
        "metrics": metrics,
    }, ["dataset", "cell", "n", "metrics"])
    gate = _closed("the regression gate's result (`python -m analysis NEW --against OLD [--gate]`); null when the "
                   "report was written without --against", {
                       "against": {"type": "array", "items": {"type": "string"}, "description": "the OLD paths"},
                       "min_delta_pct": {"type": "number", "description": "--min-delta-pct"},
                       "alpha": {"type": "number", "description": "--alpha"},
                       "exit_code": {"type": "integer", "description": "0 pass, 1 regression, 3 inconclusive (as "
                                     "with --gate; without --gate the command itself exits 0)"},
                       "verdict": {"type": "string", "description": "the one line the gate ends with"},
                       "regressions": {"type": "integer", "description": "rows whose verdict is REGRESSION"},
                       "unpaired_new": {"type": "array", "items": {"type": "string"},
                                        "description": "NEW cells without an OLD partner"},
                       "unpaired_old": {"type": "array", "items": {"type": "string"},
                                        "description": "OLD cells without a NEW partner"},
                       "rows": {"type": "array", "items": _ROW, "description": "the rows of gate.csv, by its column "
                                "names (docs/gate.md), numbers unrounded"},
                   }, ["exit_code", "verdict", "rows"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "chimera-sweep _report/summary.json",
        **_closed("what `python -m analysis` found, for programs", {
            "schema_version": {"const": SCHEMA_VERSION, "description": "changes when a key is renamed or removed"},
            "generated_at": {"type": "string", "description": "UTC time the file was written (ISO 8601)"},
            "command": {"type": "string", "description": "the `python -m analysis …` command that wrote it"},
            "inputs": {"type": "array", "description": "the paths read", "items": _closed("one input", {
                "path": {"type": "string", "description": "as given"},
                "label": {"type": "string", "description": "its dataset label"},
                "files": {"type": "integer", "description": "trial files read"},
                "rows": {"type": "integer", "description": "rows read (warm-ups and failures included)"},
            }, ["path", "label", "files", "rows"])},
            "analysis": _closed("the analysis options the numbers depend on", {
                "confidence": {"type": "number", "description": "level of every interval (0.95: CI95)"},
                "ddof": {"type": "integer", "description": "1 sample sd, 0 population sd (--population-sd)"},
                "interval": {"type": "string", "description": "how the intervals of means are computed"},
                "test": {"type": "string", "description": "baseline-vs-chimera test: welch or mannwhitney"},
                "correction": {"type": "string", "description": "multiple-comparison correction: holm or bh"},
                "alpha": {"type": "number", "description": "significance level"},
            }, ["confidence", "ddof", "interval", "test", "correction", "alpha"]),
            "provenance": {"type": "object", "description": "per dataset label, the distinct provenance records of "
                           "its sweep (_run.json: versions, machine, server, config); free-form",
                           "additionalProperties": {"type": "array", "items": {"type": "object"}}},
            "cells": {"type": "array", "description": "one entry per cell, in the report's order", "items": cell},
            "comparisons": {"type": "array", "items": _ROW,
                            "description": "baseline vs chimera: the rows of baseline_vs_chimera.csv by its column "
                                           "names, numbers unrounded; empty when the sweep has no baseline"},
            "comparisons_note": {"type": "string", "description": "why there are no comparisons (empty when there "
                                 "are)"},
            "gate": {"oneOf": [{"type": "null"}, gate], "description": gate["description"]},
        }, ["schema_version", "generated_at", "command", "inputs", "analysis", "provenance", "cells", "comparisons",
            "gate"]),
    }


def _plain(v: Any) -> Any:
    """A JSON value: NaN/NA → null, numpy scalars → Python."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) or math.isinf(v) else float(v)
    if isinstance(v, (dt.datetime, pd.Timestamp)):
        return v.isoformat()
    return v


def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A table's frame as JSON objects keyed by its column names."""
    return [{str(k): _plain(v) for k, v in r.items()} for r in frame.to_dict("records")]


def _cells(an: Analysis) -> list[dict[str, Any]]:
    cs, cells = an.cellstats, an.cells
    out = []
    for key in cs.index:
        c = cells.loc[key]
        entry: dict[str, Any] = {k: _plain(c[k]) if k in c.index else None for k, _ in IDENTITY}
        entry["options"] = {k: _plain(c[k]) for k in OPTION_KEYS if k in c.index and _plain(c[k]) is not None}
        entry["n"], entry["failed"], entry["warmups"] = (int(cs.at[key, k]) for k in ("n", "failed", "warmups"))
        metrics = {}
        for m in METRICS:
            if f"{m}:mean" not in cs and f"{m}:p50" not in cs:
                continue
            stats = {k: _plain(cs.at[key, f"{m}:{k}"]) for k, _, _ in STATS if f"{m}:{k}" in cs}
            stats.setdefault("n", int(cs.at[key, "n"]))
            stats.setdefault("mean", None)
            if stats.get(intervals.NOTE) is None and intervals.NOTE in stats:
                stats[intervals.NOTE] = ""
            metrics[m] = stats
        entry["metrics"] = metrics
        out.append(entry)
    return out


def document(an: Analysis, inputs: list[dict[str, Any]], provenance: dict[str, list[dict[str, Any]]],
             argv: Sequence[str] | None, interval: str, gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary as a JSON-ready dict (see :func:`schema`)."""
    opts = an.options
    bvc: Table | None = an.get("baseline_vs_chimera")
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m analysis" + (" " + " ".join(map(str, argv)) if argv else ""),
        "inputs": inputs,
        "analysis": {"confidence": opts.confidence, "ddof": opts.ddof, "interval": interval, "test": opts.test,
                     "correction": opts.correction, "alpha": opts.alpha},
        "provenance": provenance,
        "cells": _cells(an),
        "comparisons": rows(bvc.frame) if bvc is not None else [],
        "comparisons_note": an.notes.get("baseline_vs_chimera", "") if bvc is None else "",
        "gate": gate,
    }


def write(out_dir: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` to ``out_dir/summary.json`` (provenance values JSON cannot hold become text)."""
    path = out_dir / FILE
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=str, allow_nan=False) + "\n",
                    encoding="utf-8")
    return path
