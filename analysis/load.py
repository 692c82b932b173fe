"""Any input (sweep dir, Parquet file/dir, CSV; several at once) → one tidy trial frame.

The only module that touches files.  It also collects provenance (``_run.json``
beside the trials, or Parquet key-value metadata ``chimera.provenance``) and
turns every problem with the input into :class:`InputError`, which the CLI
prints as one line (exit 2) instead of a traceback.

The tidy frame adds a few columns the rest of the package relies on:
``dataset`` (sweep id, or the input's name), ``cell`` (readable cell label),
``cell_key`` (int code of dataset × cell), ``is_warmup``, ``is_failed`` and
``measured`` (ok and not warm-up: the rows statistics use).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis import client_share, importers, latency
from analysis.columns import (
    AGENT_ID, AGENTS, GPU_NAME, HEADLINE, INT_OPTIONS, NUMERIC_COLUMNS, OPTION_KEYS, RUN_ID, SCENARIO, WORKFLOW_ID,
)
from sweep.contract import PROVENANCE_KEY, RUN_FILE, SWEEPS_ROOT, Status, read_tables, read_whole, trace_files
from sweep.contract import newest_sweep as _newest_sweep

STATE, RELOADED, ROW_STATE = "state", "reloaded", "row_state"
WARM, COLD, RELOAD = "warm", "cold", "reload"


class InputError(Exception):
    """Bad input the user can fix; the message is one line and says how."""


@dataclass
class Source:
    """One input path as given, and what was read from it."""

    path: Path
    label: str
    rows: int
    files: int
    provenance: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Loaded:
    """The tidy frame plus where it came from."""

    frame: pd.DataFrame
    sources: list[Source]
    provenance: dict[str, list[dict[str, Any]]]  # dataset label → distinct provenance dicts
    held_fixed: dict[str, str] = field(default_factory=dict)  # preset → options every cell of it shares
    traces: pd.DataFrame | None = None  # telemetry samples (sweep dirs' _telemetry/), with a `cell` column
    imports: dict[str, importers.Imported] = field(default_factory=dict)  # label → an old harness folder's import

    @property
    def datasets(self) -> list[str]:
        return sorted(self.frame["dataset"].unique().tolist())


# ---------------------------------------------------------------- finding inputs


def newest_sweep(root: Path = Path(SWEEPS_ROOT)) -> Path:
    """The most recently modified sweep directory under ``root`` that holds trials (empty ones are skipped)."""
    newest = _newest_sweep(root)
    if newest is None:
        raise InputError(f"no sweep with trials under {root}/ — run a sweep first or pass a PATH "
                         "(sweep dir, .parquet or .csv)")
    return newest


def was_search(path: Path) -> bool:
    """True for a sweep run by the Optuna sweeper: it leaves ``optimization_results.yaml`` in Hydra's sweep dir."""
    if not path.is_dir():
        return False
    return any(path.glob("optimization_results.yaml")) or any(path.glob("*/optimization_results.yaml"))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else {"value": data}


def _parquet_provenance(table: pa.Table) -> dict[str, Any] | None:
    meta = table.schema.metadata or {}
    raw = meta.get(PROVENANCE_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {"raw": raw.decode("utf-8", "replace")}
    return data if isinstance(data, dict) else {"value": data}


def _read_parquet_files(path: Path) -> tuple[pd.DataFrame, int, list[dict[str, Any]]]:
    """A sweep directory's trial files (or one Parquet file) → frame, number of files, provenance."""
    try:
        read = read_tables(path) if path.is_dir() else [(path, read_whole(path))]
    except (OSError, pa.ArrowException) as exc:
        message = str(exc).splitlines()[0] if path.is_dir() else f"cannot read {path}: {str(exc).splitlines()[0]}"
        raise InputError(f"{message} — remove or replace the file") from None
    if not read:
        raise InputError(f"no trial Parquet files in {path} — pass a sweep directory (outputs/sweeps/<id>), a file, "
                         f"or a folder of the original harnesses' metrics.json files")
    tables, prov = [], []
    for _, t in read:
        p = _parquet_provenance(t)
        if p is not None and p not in prov:
            prov.append(p)
        tables.append(t.replace_schema_metadata(None))
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
        frame = table.to_pandas()
    except (pa.ArrowException, ValueError):
        frame = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    return frame, len(read), prov


def _read_traces(path: Path) -> pd.DataFrame | None:
    """The per-sample telemetry a sweep wrote beside its trials; unreadable files are skipped."""
    frames = []
    for f in trace_files(path if path.is_dir() else path.parent):
        try:
            frames.append(read_whole(f).to_pandas())
        except (OSError, pa.ArrowException):
            continue
    return pd.concat(frames, ignore_index=True) if frames else None


def _label_traces(traces: list[pd.DataFrame], df: pd.DataFrame) -> pd.DataFrame | None:
    """Give the samples the trial rows' cell labels (matched by cell hash)."""
    if not traces or "cell_hash" not in df.columns:
        return None
    frame = pd.concat(traces, ignore_index=True)
    labels = df.drop_duplicates("cell_hash").set_index("cell_hash")["cell"]
    frame["cell"] = frame["cell_hash"].map(labels)
    return frame[frame["cell"].notna()]


def _read_source(path: Path) -> tuple[pd.DataFrame, int, list[dict[str, Any]]]:
    """One input path → (raw frame, number of files, provenance dicts)."""
    if not path.exists():
        raise InputError(f"{path} does not exist — pass a sweep directory, a .parquet file or a .csv")
    prov: list[dict[str, Any]] = []
    run_json = (path if path.is_dir() else path.parent) / RUN_FILE
    if run_json.is_file():
        p = _read_json(run_json)
        if p is not None:
            prov.append(p)
    if path.is_dir():
        frame, n_files, meta_prov = _read_parquet_files(path)
        return frame, n_files, prov + [p for p in meta_prov if p not in prov]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path, low_memory=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"cannot read {path} as CSV: {str(exc).splitlines()[0]} — check the file") from None
        return frame, 1, prov
    if suffix in (".parquet", ".pq"):
        frame, _, meta_prov = _read_parquet_files(path)
        return frame, 1, prov + [p for p in meta_prov if p not in prov]
    raise InputError(f"{path}: unknown file type {suffix or '(none)'} — pass a .parquet, a .csv or a sweep directory")


# ---------------------------------------------------------------- tidying


def as_bool(s: pd.Series) -> pd.Series:
    """Booleans from bool/0-1/'true'/'false' columns; null → False."""
    if s.dtype == bool:
        return s
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.fillna(0).astype(float) != 0
    low = s.astype("string").str.strip().str.lower()
    return low.isin(["true", "1", "yes", "t", "1.0"]).fillna(False).astype(bool)


def per_agent_columns(df: pd.DataFrame, cols: Sequence[str], by: str | list[str] = RUN_ID) -> set[str]:
    """Columns that differ between the agents of one group (a heterogeneous run or cell).

    Why: agents of one multi-agent run may send different options (``chimera_hetero``,
    ``baseline_vs_chimera``); those columns describe agents, not the cell, so they
    must neither split a run into cells nor name it.
    """
    keys = [by] if isinstance(by, str) else by
    if not cols or AGENT_ID not in df.columns or not df[AGENT_ID].notna().any():
        return set()  # not agent data: skip the scan (a million-row sweep pays nothing)
    if any(k not in df.columns for k in keys) or not df[keys[-1]].notna().any():
        return set()
    counts = df.groupby(keys, sort=False)[list(cols)].nunique(dropna=False).max()
    return {c for c in cols if counts[c] > 1}


def _derive_cells(df: pd.DataFrame) -> pd.Series:
    """A readable cell label from the parameter columns present (when ``cell_id`` is missing)."""
    ident = [c for c in ("preset", "model", "workload", "backend", SCENARIO) if c in df.columns]
    opts = [c for c in OPTION_KEYS if c in df.columns and df[c].notna().any()]
    per_agent = per_agent_columns(df, ["preset", *opts] if "preset" in ident else opts)
    ident = [c for c in ident if c not in per_agent] + ([AGENTS] if AGENTS in df.columns else [])
    opts = [c for c in opts if c not in per_agent]
    cols = ident + opts
    if not cols:
        raise InputError("no column identifies cells (need cell_id, or model/preset/option columns such as num_gpu)")
    codes = df.groupby(cols, dropna=False, sort=False).ngroup()
    firsts = df.loc[~codes.duplicated(), cols]
    labels = {}
    for code, (_, row) in zip(codes[~codes.duplicated()], firsts.iterrows()):
        parts = [_ident_text(c, row[c]) for c in ident if pd.notna(row[c])]
        parts += [f"{c}={format_level(c, row[c])}" for c in opts if pd.notna(row[c])]
        labels[code] = " ".join(parts) or "default"
    return codes.map(labels)


def _ident_text(column: str, value: Any) -> str:
    """An identity value in a cell label (the agent count says what it counts)."""
    if column == AGENTS:
        return f"agents={int(value)}"
    if column == SERVER_PARALLEL:   # the server's slots (backend.parallel), as the sweep's cell ids say them
        return f"parallel={int(value)}"
    return str(value)


def format_level(column: str, value: Any) -> str:
    """A parameter value as text: ints without '.0', floats as floats, null as 'default'."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "default"
    if column in INT_OPTIONS:
        try:
            return str(int(value))
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, (float, np.floating)):
        return str(float(value))
    return str(value)


def tidy(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Normalise one source's raw frame: types, defaults, dataset and cell columns."""
    df = frame.copy()
    if not any(m.column in df.columns for m in HEADLINE):
        raise InputError(
            f"{label}: no throughput_tok_s or ttft_ms column — convert the data to the trial columns (sweep/contract.py)"
        )
    for c in NUMERIC_COLUMNS:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    if "status" not in df.columns:
        df["status"] = Status.OK.value
    df["status"] = df["status"].fillna(Status.OK.value).astype(str)
    df["is_warmup"] = as_bool(df["warmup"]) if "warmup" in df.columns else False
    df["is_failed"] = (df["status"] != Status.OK) & ~df["is_warmup"]
    df["measured"] = (df["status"] == Status.OK) & ~df["is_warmup"]
    if "started_at" in df.columns and not pd.api.types.is_datetime64_any_dtype(df["started_at"]):
        df["started_at"] = pd.to_datetime(df["started_at"], errors="coerce", utc=True)
    if "sweep_id" in df.columns:
        df["dataset"] = df["sweep_id"].fillna(label).astype(str)
    else:
        df["dataset"] = label
    if "cell_id" in df.columns and df["cell_id"].notna().all():
        df["cell"] = df["cell_id"].astype(str)
    elif "cell_id" in df.columns and df["cell_id"].notna().any():
        derived = _derive_cells(df)
        df["cell"] = df["cell_id"].where(df["cell_id"].notna(), derived).astype(str)
    else:
        df["cell"] = _derive_cells(df)
    return latency.add_columns(client_share.add_columns(_row_state(df)))


def _row_state(df: pd.DataFrame) -> pd.DataFrame:
    """``row_state``: the model state a row was measured in — cold (state=cold), reload (state=reload and
    the trial loaded the model: ``reloaded``), else warm.  Under state=warm a ``reloaded`` trial (warmup=0,
    an eviction) stays in its cell, as before; the run-order table shows it.

    Rows of different states never pool: a non-warm state is part of the cell label
    (``… [cold]``), so every table shows warm, cold and reload separately.  Rows of an
    agent workflow keep their cell: a reload inside a workflow or a concurrent run
    (agents with different load-time options on one server) is part of what it measures,
    and splitting its calls over two cells would break the run apart.
    """
    if STATE not in df.columns and RELOADED not in df.columns:
        return df
    asked = df[STATE].astype(object).where(df[STATE].notna(), WARM) if STATE in df.columns else WARM
    asked = pd.Series(asked, index=df.index, dtype=object)
    state = asked.where(asked == COLD, WARM)  # state=reload: the rows that did not load are warm ones
    if RELOADED in df.columns:                 # under state=reload, a measured trial that loaded the model
        split = (asked == RELOAD) & as_bool(df[RELOADED]) & ~df["is_warmup"]
        state = state.where(~split, RELOAD)
    df[ROW_STATE] = state.astype(str)
    whole = df[WORKFLOW_ID].notna() if WORKFLOW_ID in df.columns else False
    df["cell"] = df["cell"] + np.where(whole, "", state_suffix(df[ROW_STATE]))
    return df


def state_suffix(state: pd.Series) -> pd.Series:
    """`` [cold]`` / `` [reload]`` for non-warm rows, ``""`` for warm ones."""
    return np.where(state == WARM, "", " [" + state + "]")


def _embedded_server_label(df: pd.DataFrame) -> pd.DataFrame:
    """The embedded engine's address is an ephemeral port: one label, so resumed runs still match."""
    if "backend" in df.columns and "base_url" in df.columns:
        embedded = df["backend"].astype(str).eq("embedded") & df["base_url"].notna()
        df.loc[embedded, "base_url"] = "embedded (127.0.0.1)"
    return df


SERVER_PARALLEL = "server_parallel"
_LABEL_IDENTITY = ("model", "workload", SCENARIO, AGENTS, SERVER_PARALLEL)


def compact_labels(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Shorten cell labels to the preset plus what varies, and say what is held fixed.

    Full cell ids repeat every option of the preset (``chimera gemma3:270m
    num_gpu=80 … num_predict=64``), which buries the one or two swept values a
    reader looks for.  Within each preset only the options that differ between
    its cells are kept; model and workload appear when they vary at all.  If
    two cells of one dataset would end up with the same label, the full ids stay.
    """
    if "preset" not in df.columns:
        return df, {}
    opts = [c for c in OPTION_KEYS if c in df.columns]
    opts = [c for c in opts if c not in per_agent_columns(df, opts, ["dataset", "cell"])]
    ident = [c for c in _LABEL_IDENTITY if c in df.columns and df[c].nunique(dropna=False) > 1]
    state = [ROW_STATE] if ROW_STATE in df.columns else []
    pairs, (datasets, cell_ids) = _pair_codes(df["dataset"], df["cell"])
    first = ~pd.Series(pairs).duplicated().to_numpy()          # each cell's first row, as drop_duplicates keeps
    cells = df.loc[first, ["dataset", "cell", "preset", *ident, *opts, *state]]
    new: dict[tuple[str, str], str] = {}
    fixed: dict[str, str] = {}
    for preset, group in cells.groupby("preset", dropna=False, sort=False):
        varying = [c for c in opts if group[c].nunique(dropna=False) > 1]
        held = [c for c in opts if c not in varying and group[c].notna().all()]
        fixed[str(preset)] = " ".join(f"{c}={format_level(c, group[c].iloc[0])}" for c in held) or "server defaults"
        for row in group.itertuples(index=False):
            values = row._asdict()
            parts = [str(preset)] + [_ident_text(c, values[c]) for c in ident if pd.notna(values[c])]
            parts += [f"{c}={format_level(c, values[c])}" for c in varying]
            if ROW_STATE in values and values[ROW_STATE] != WARM:
                parts.append(f"[{values[ROW_STATE]}]")
            new[(row.dataset, row.cell)] = " ".join(parts)
    labels = pd.Series(new)
    if labels.groupby(level=0).apply(lambda s: s.duplicated().any()).any():
        return df, {}
    uniq, inverse = np.unique(pairs, return_inverse=True)
    n = len(cell_ids)
    short = np.array([new[(datasets[p // n], cell_ids[p % n])] for p in uniq], dtype=object)
    df["cell_id_full"] = df["cell"]
    df["cell"] = pd.Series(short).array.take(inverse)   # one Arrow take, not a million Python strings
    return df, fixed


def _pair_codes(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One int64 per row for the pair (a, b), ordered as (a, b) sort; and the sorted uniques of each.

    Why not a MultiIndex: turning a million-row MultiIndex into tuples was the
    analysis's slowest step (1.5 s); two factorizations and integer maths are
    milliseconds.
    """
    ca, ua = pd.factorize(a, sort=True)
    cb, ub = pd.factorize(b, sort=True)
    return ca.astype(np.int64) * len(ub) + cb, (np.asarray(ua, dtype=object), np.asarray(ub, dtype=object))


def _split_by_gpu(df: pd.DataFrame) -> pd.DataFrame:
    """Label a dataset per GPU when one dataset holds rows from several GPU models.

    Cell ids do not name the hardware, so without this, trials from two machines
    would silently pool into one cell.
    """
    if GPU_NAME not in df.columns or df[GPU_NAME].nunique() < 2:
        return df
    per = df.groupby("dataset")[GPU_NAME].nunique()
    mixed = df["dataset"].isin(per[per > 1].index)
    if mixed.any():
        gpu = df.loc[mixed, GPU_NAME].astype(object).fillna("no GPU").astype(str)
        df.loc[mixed, "dataset"] = df.loc[mixed, "dataset"].astype(str) + " [" + gpu + "]"
    return df


def _label_for(path: Path, used: set[str]) -> str:
    base = path.name if path.is_dir() else path.stem
    label, i = base, 2
    while label in used:
        label, i = f"{base}#{i}", i + 1
    used.add(label)
    return label


def _import(path: Path, import_to: Path | None) -> tuple[pd.DataFrame, importers.Imported]:
    """A folder of the original harnesses' results → its trial rows (converted once, then kept).

    Each file that could not be imported is one stderr line; the rest of the folder is used.
    """
    imported = importers.import_folder(path, import_to)
    for line in imported.warnings + imported.problems:
        print(f"warning: {line} (skipped)" if line in imported.problems else f"warning: {line}", file=sys.stderr)
    if imported.table.num_rows == 0:
        first = imported.problems[0] if imported.problems else f"{path}: no harness file held any call"
        raise InputError(f"nothing imported from {path}: {first}")
    return imported.table.to_pandas(), imported


def load(paths: Sequence[str | Path], import_to: Path | None = None) -> Loaded:
    """Read and tidy every path, concatenate, and key cells by (dataset, cell).

    A folder of the original harnesses' results is converted on the way (kept in
    ``<folder>/_imported/``, or under ``import_to``).
    """
    if not paths:
        root = newest_sweep()
        paths = [root]
    frames, sources, used, traces = [], [], set(), []
    provenance: dict[str, list[dict[str, Any]]] = {}
    imports: dict[str, importers.Imported] = {}
    for raw in paths:
        path = Path(raw)
        label = _label_for(path, used)
        if importers.is_harness_folder(path):
            frame, imports[label] = _import(path, import_to)
            nfiles, prov = imports[label].files, imports[label].provenance
        else:
            frame, nfiles, prov = _read_source(path)
        if len(frame) == 0:
            raise InputError(f"{path} holds no rows — pass a sweep that has run trials")
        df = tidy(frame, label)
        frames.append(df)
        if (trace := _read_traces(path)) is not None:
            traces.append(trace)
        sources.append(Source(path, label, len(df), nfiles, prov))
        for ds in df["dataset"].unique():
            bucket = provenance.setdefault(str(ds), [])
            bucket.extend(p for p in prov if p not in bucket)
    df, fixed = combine(frames)
    return Loaded(df, sources, provenance, fixed, _label_traces(traces, df), imports)


def combine(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Tidy frames → one frame keyed by (dataset, cell), with short labels and what they hold fixed."""
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df = _split_by_gpu(_embedded_server_label(df))
    df, fixed = compact_labels(df)
    if not df["measured"].any():
        raise InputError("no usable rows: every trial is a warm-up or failed (status != 'ok') — check the sweep's errors")
    pairs, _ = _pair_codes(df["dataset"], df["cell"])
    df["cell_key"] = np.unique(pairs, return_inverse=True)[1].astype(np.int64)
    return df, fixed
