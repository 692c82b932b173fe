"""What the three harness readers share: field access that names what is missing, f32 clean-up, row building.

Why a module of its own: each reader (one per file format) must turn a missing or
mistyped field into one line naming the file and the field (:class:`Problem`), read
the Ollama options the same way (``{}`` = the server's defaults = our baseline
preset; f32 floats back to their short decimal), and append rows column by column
(:class:`Rows`): building a dict per row and letting Arrow infer 80 columns was the
slow part of importing a thousand run folders.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sweep.contract import COLUMNS_BY_NAME, INT_OPTIONS, OPTION_KEYS, SCHEMA, Status, conform

BASELINE, CHIMERA = "baseline", "chimera"
# Our workload names for what the harnesses ran (so a gate pairs their cells with ours).
AGENT_WORKLOAD, MULTI_AGENT_WORKLOAD = "agent_report", "multi_agent"
CONCURRENT = "concurrent"
MS_PER_S = 1000.0


class Problem(Exception):
    """One file that cannot be imported, as one line: ``<file>: <field> …``."""

    def __init__(self, file: str, what: str) -> None:
        super().__init__(f"{file}: {what}")
        self.file, self.what = file, what


@dataclass(frozen=True)
class Difference:
    """An original derived figure that disagrees with what its raw data give."""

    file: str
    figure: str
    original: float | None
    recomputed: float | None


def read_json(path: Path, rel: str) -> dict[str, Any]:
    """The file's top-level object; a truncated or non-object file is a :class:`Problem`."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise Problem(rel, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except ValueError as exc:
        raise Problem(rel, f"is not valid JSON ({str(exc).splitlines()[0]}): truncated? re-copy the file") from None
    if not isinstance(data, dict):
        raise Problem(rel, "is not a JSON object")
    return data


def need(obj: Any, key: str, rel: str, where: str = "") -> Any:
    """``obj[key]``, or a :class:`Problem` naming the missing field by its dotted path."""
    name = f"{where}.{key}" if where else key
    if not isinstance(obj, dict):
        raise Problem(rel, f"field `{where or '(top level)'}` is not an object")
    if key not in obj or obj[key] is None:
        raise Problem(rel, f"missing field `{name}`")
    return obj[key]


def number(obj: Any, key: str, rel: str, where: str = "", required: bool = True) -> float | None:
    """A numeric field (numbers written as strings too, as the Python harness did); None if optional and absent."""
    if not required and (not isinstance(obj, dict) or obj.get(key) is None):
        return None
    value = need(obj, key, rel, where)
    try:
        if isinstance(value, bool):
            raise TypeError
        out = float(value.strip().removesuffix("s") if isinstance(value, str) else value)   # "12.3", "12.3s"
    except (TypeError, ValueError):
        raise Problem(rel, f"field `{where + '.' if where else ''}{key}` is not a number ({value!r})") from None
    if not math.isfinite(out):
        if not required:
            return None                   # an optional figure the harness could not compute (NaN)
        raise Problem(rel, f"field `{where + '.' if where else ''}{key}` is not finite ({value!r})")
    return out


def short_float(value: float) -> float:
    """An f32 written as f64 (``0.6000000238418579``) back to the short decimal it was (``0.6``).

    Only a value that is exactly an f32 is changed: the shortest decimal that rounds to
    the same f32 is what the user typed.  Other floats are returned as they are.
    """
    f32 = np.float32(value)
    if float(f32) != value:
        return value
    return float(np.format_float_positional(f32, unique=True, trim="-"))


def options(config: Any, rel: str, where: str) -> dict[str, Any]:
    """The sweep options an agent sent (``{}``/null: none, the server's defaults); unknown keys are ignored."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise Problem(rel, f"field `{where}` is not an object")
    out: dict[str, Any] = {}
    for key in OPTION_KEYS:
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Problem(rel, f"field `{where}.{key}` is not a number ({value!r})")
        out[key] = int(value) if key in INT_OPTIONS else short_float(float(value))
    return out


def preset(opts: dict[str, Any]) -> str:
    """No option sent is our baseline preset (the server's defaults); any option set is a chimera configuration."""
    return CHIMERA if opts else BASELINE


def mean(values: list[float | None]) -> float | None:
    """The plain mean of the values present (None when there are none)."""
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def tok_per_s(tokens: float | None, eval_ms: float | None) -> float | None:
    """eval_count ÷ eval_duration, the server's decode rate; None without a positive duration.

    The Rust harness divided by max(eval_duration, 1 µs), so a call without timings
    became millions of tok/s; here it has no throughput instead.
    """
    if tokens is None or eval_ms is None or eval_ms <= 0:
        return None
    return tokens / (eval_ms / MS_PER_S)


def differ(original: float | None, recomputed: float | None, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    """Do two figures disagree beyond rounding (a missing recomputation is not a disagreement)?"""
    if original is None or recomputed is None:
        return False
    return not math.isclose(original, recomputed, rel_tol=rel_tol, abs_tol=abs_tol)


@dataclass
class Rows:
    """Trial rows gathered column by column; every row gets every column (null where not set)."""

    columns: dict[str, list[Any]] = field(default_factory=dict)
    count: int = 0

    def add(self, **values: Any) -> None:
        for name, value in values.items():
            col = self.columns.get(name)
            if col is None:
                if name not in COLUMNS_BY_NAME:
                    raise KeyError(f"{name} is not a trial column (sweep/contract.py)")
                col = self.columns[name] = [None] * self.count
            col.append(value)
        self.count += 1
        for col in self.columns.values():
            if len(col) < self.count:
                col.append(None)

    def extend(self, other: Rows) -> None:
        """Append another file's rows (so a file that fails halfway adds nothing)."""
        for name in other.columns.keys() - self.columns.keys():
            self.columns[name] = [None] * self.count
        for name, col in self.columns.items():
            col.extend(other.columns.get(name, [None] * other.count))
        self.count += other.count

    def table(self) -> pa.Table:
        """The rows in the trial schema (:data:`sweep.contract.SCHEMA`)."""
        arrays = {name: pa.array(values, type=COLUMNS_BY_NAME[name].type) for name, values in self.columns.items()}
        return conform(pa.table(arrays) if arrays else SCHEMA.empty_table(), SCHEMA)


def call_row(rows: Rows, metrics: Any, rel: str, where: str, **ident: Any) -> None:
    """One LLM call of a Rust harness → one trial row (client wall = e2e; Ollama's total_duration was not kept)."""
    tokens = number(metrics, "tokens_generated", rel, where)
    eval_ms = number(metrics, "eval_duration_ms", rel, where)
    rows.add(
        **ident,
        status=Status.OK.value, warmup=False,
        ttft_ms=number(metrics, "ttft_ms", rel, where),
        e2e_ms=number(metrics, "total_duration_ms", rel, where),
        throughput_tok_s=tok_per_s(tokens, eval_ms),
        load_duration_ms=number(metrics, "load_duration_ms", rel, where),
        prompt_eval_duration_ms=number(metrics, "prompt_eval_duration_ms", rel, where),
        eval_duration_ms=eval_ms,
        eval_count=int(tokens) if tokens is not None else None,
    )
