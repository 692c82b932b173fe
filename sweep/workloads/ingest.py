"""The agent workflow's first step: a directory of benchmark files → a compact text summary.

Why text: the summary is what the analysis call's prompt carries, so it must be
short (it competes with the answer for the cell's ``num_ctx``) and readable by
a small model.  CSV, JSON, Markdown and Parquet files are read (a sweep
directory of ours works: its trial Parquet files are tables); anything under a
``_`` or ``.`` directory (Hydra files, telemetry, reports of reports) is skipped,
as everywhere else in the project.  Files are read fresh on every workflow
because ingest is part of what the workflow measures (``ingest_ms``).

The default data directory is a small sample of real output of our own sweep
shipped inside the package (:data:`SAMPLE_DIR`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:   # pandas costs ~0.7 s to import: only an agent workflow's ingest loads it
    import pandas as pd

from sweep.cells import ConfigError

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample_benchmarks"
SUFFIXES = (".csv", ".json", ".md", ".parquet")
MAX_FILES = 20             # more files than this: the first ones (sorted), and the count of the rest
MAX_NUMERIC_COLUMNS = 8    # per table: the columns a model can still relate to each other
MAX_GROUPS = 8             # per table: rows of a grouped summary
MARKDOWN_CHARS = 600       # per Markdown file: its headings and the start of its text


@dataclass(frozen=True)
class Summary:
    """What ingest found: the text for the prompt and how much it read."""

    text: str
    files: int
    rows: int


def data_files(data_dir: Path) -> list[Path]:
    """Readable files under ``data_dir``, sorted, skipping ``_``/``.`` directories and files."""
    if not data_dir.is_dir():
        raise ConfigError(f"workload.data_dir '{data_dir}' is not a directory: point it at a folder of "
                          "CSV/JSON/Markdown/Parquet files (or leave it unset for the bundled sample)")
    files = []
    for p in sorted(data_dir.rglob("*")):
        rel = p.relative_to(data_dir).parts
        if p.is_file() and p.suffix.lower() in SUFFIXES and not any(x.startswith(("_", ".")) for x in rel):
            files.append(p)
    if not files:
        raise ConfigError(f"workload.data_dir '{data_dir}' holds no .csv, .json, .md or .parquet file")
    return files


def _number(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"


# Columns a reader of benchmark data looks for first; the rest keep their order.
_PRIORITY = ("tok/s", "tok_s", "throughput", "ttft", "latency", "_ms", " ms", "duration", "speedup", "Δ")


def _label_column(frame: pd.DataFrame) -> str | None:
    """A text column that names rows (cell, model, config…): more than one distinct value, few of them."""
    import pandas as pd   # lazily: see the TYPE_CHECKING import

    for c in frame.columns:
        if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c]):
            n = frame[c].nunique(dropna=True)
            if 1 < n <= MAX_GROUPS:
                return str(c)
    return None


def _metric_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric columns that vary, the usual benchmark metrics first."""
    import pandas as pd   # lazily: see the TYPE_CHECKING import

    numeric = [c for c in frame.columns
               if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               and frame[c].notna().any() and frame[c].nunique() > 1]
    ranked = sorted(numeric, key=lambda c: next((i for i, p in enumerate(_PRIORITY) if p in str(c)), len(_PRIORITY)))
    return [str(c) for c in ranked[:MAX_NUMERIC_COLUMNS]]


def summarize_table(name: str, frame: pd.DataFrame) -> str:
    """Rows, columns, and mean/min/max of the numeric columns (grouped by a label column when one exists)."""
    import pandas as pd   # lazily: see the TYPE_CHECKING import

    numeric = _metric_columns(frame)
    lines = [f"## {name}: {len(frame)} rows × {len(frame.columns)} columns"]
    for c in numeric:
        s = frame[c].dropna()
        lines.append(f"- {c}: mean {_number(s.mean())}, min {_number(s.min())}, max {_number(s.max())} (n={len(s)})")
    label = _label_column(frame)
    if label and numeric:
        means = frame.groupby(label, sort=True)[numeric[:3]].mean()
        lines.append(f"- mean by {label}:")
        for key, row in means.head(MAX_GROUPS).iterrows():
            lines.append(f"  - {key}: " + ", ".join(f"{c} {_number(v)}" for c, v in row.items() if pd.notna(v)))
    if not numeric:
        lines.append("- columns: " + ", ".join(map(str, frame.columns[:12])))
    return "\n".join(lines)


def _json_frame(obj: Any) -> pd.DataFrame | None:
    """A JSON document as a table when it is one (a list of records, or a dict holding one)."""
    import pandas as pd   # lazily: see the TYPE_CHECKING import

    if isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        return pd.json_normalize(obj)
    if isinstance(obj, dict):
        for value in obj.values():
            if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
                return pd.json_normalize(value)
        return pd.json_normalize(obj)
    return None


def summarize_markdown(name: str, text: str) -> str:
    """Headings first (they say what the document covers), then the start of the text."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    headings = [line.lstrip("#").strip() for line in lines if line.startswith("#")][:8]
    body = " ".join(line for line in lines if not line.startswith(("#", "|", "```")))
    parts = [f"## {name}: Markdown, {len(text)} characters"]
    if headings:
        parts.append("- headings: " + "; ".join(headings))
    if body:
        parts.append("- text: " + body[:MARKDOWN_CHARS] + ("…" if len(body) > MARKDOWN_CHARS else ""))
    return "\n".join(parts)


def _read(path: Path) -> tuple[str, int]:
    """One file → (summary text, rows read); an unreadable file is one line saying so."""
    import pandas as pd   # lazily: see the TYPE_CHECKING import

    name = path.name
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, low_memory=False)
            return summarize_table(name, frame), len(frame)
        if suffix == ".parquet":
            with pa.OSFile(str(path), "rb") as handle:  # one handle: a sweep still being written reads consistently
                import pyarrow.parquet as pq

                frame = pq.read_table(handle).to_pandas()
            return summarize_table(name, frame), len(frame)
        if suffix == ".json":
            frame = _json_frame(json.loads(path.read_text(encoding="utf-8")))
            if frame is None:
                return f"## {name}: JSON without records", 0
            return summarize_table(name, frame), len(frame)
        return summarize_markdown(name, path.read_text(encoding="utf-8", errors="replace")), 0
    except (OSError, ValueError, pa.ArrowException) as exc:
        return f"## {name}: unreadable ({type(exc).__name__})", 0


def ingest(data_dir: Path, max_chars: int) -> Summary:
    """Read every data file under ``data_dir`` and summarise it in at most ``max_chars`` characters."""
    files = data_files(data_dir)
    shown = files[:MAX_FILES]
    parts, rows = [], 0
    for path in shown:
        text, n = _read(path)
        parts.append(text)
        rows += n
    if len(files) > len(shown):
        parts.append(f"({len(files) - len(shown)} more files not shown)")
    text = f"# Benchmark data: {len(files)} files from {data_dir.name}\n\n" + "\n\n".join(parts)
    if len(text) > max_chars:
        text = text[: max(0, max_chars - 1)] + "…"
    return Summary(text, len(files), rows)
