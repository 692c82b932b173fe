"""The report's environment block: what machine and software produced each dataset.

A sweep stores its provenance (``sweep/provenance.py``) in ``_run.json`` and in
every cell file's metadata, with the full resolved config of each cell.  A
reader of a report needs a dozen facts from it, not the config dump: this
module picks those facts, one row per fact and dataset, and joins values that
differ between the runs of one dataset (a resumed sweep on a newer commit) with
" | " so a change is visible rather than hidden.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pandas as pd

_KEY_PACKAGES = ("hydra-core", "httpx", "aiohttp", "pandas", "pyarrow", "llama-cpp-python", "nvidia-ml-py")
_SKIP = ("config", "cells", "command")  # per-cell detail, not environment


def _tool(p: dict[str, Any]) -> str | None:
    tool = p.get("tool")
    if not isinstance(tool, dict):
        return None
    commit = (tool.get("commit") or "")[:12] or "no git checkout"
    return f"chimera-sweep {tool.get('version') or '?'} ({commit}{', dirty' if tool.get('dirty') else ''})"


def _packages(p: dict[str, Any]) -> str | None:
    pk = p.get("packages")
    if not isinstance(pk, dict):
        return None
    return ", ".join(f"{k} {pk[k]}" for k in _KEY_PACKAGES if pk.get(k)) or None


def _machine(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda p: (p.get("machine") or {}).get(key) if isinstance(p.get("machine"), dict) else None


def _cpu(p: dict[str, Any]) -> str | None:
    m = p.get("machine")
    if not isinstance(m, dict) or not m.get("cpu"):
        return None
    return f"{m['cpu']} × {m.get('cpu_count')} logical, {m.get('ram_gb')} GB RAM"


def _gpus(p: dict[str, Any]) -> str | None:
    m = p.get("machine")
    if not isinstance(m, dict):
        return None
    names = m.get("gpus") or []
    if not names:
        return f"none ({m.get('gpu_telemetry', 'no NVML')})"
    return f"{' + '.join(names)}; driver {m.get('gpu_driver')}, CUDA driver {m.get('cuda_driver')}"


def _server(p: dict[str, Any]) -> str | None:
    s = p.get("server")
    if isinstance(s, dict):
        return f"{s.get('backend')} server, version {s.get('version')}"
    return p.get("server_version")


def _models(p: dict[str, Any]) -> str | None:
    models = p.get("models")
    if not isinstance(models, dict) or not models:
        return None
    parts = []
    for name, m in sorted(models.items()):
        m = m or {}
        bits = [m.get("family"), m.get("parameter_size"), m.get("quantization_level")]
        digest = (m.get("digest") or "")[:12]
        parts.append(f"{name} ({', '.join(str(b) for b in bits if b)}{'; ' + digest if digest else ''})")
    return "; ".join(parts)


def _command(p: dict[str, Any]) -> str | None:
    cmd = p.get("command")
    if not cmd:
        cells = p.get("cells")
        if isinstance(cells, dict) and cells:
            cmd = next(iter(cells.values())).get("command")
    if not cmd:
        return None
    args = [a for a in cmd[1:] if not a.startswith("sweep_id=")] if isinstance(cmd, list) else [str(cmd)]
    return "python -m sweep " + " ".join(args)


FACTS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("tool", _tool),
    ("python", lambda p: p.get("python")),
    ("packages", _packages),
    ("OS", _machine("os")),
    ("CPU", _cpu),
    ("GPUs", _gpus),
    ("server", _server),
    ("models", _models),
    ("command", _command),
)


def _known(p: dict[str, Any]) -> bool:
    return any(k in p for k in ("tool", "machine", "models"))


def _flat(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        out: list[tuple[str, str]] = []
        for k, v in obj.items():
            if not prefix and k in _SKIP:
                continue
            out += _flat(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    text = obj if isinstance(obj, str) else json.dumps(obj, default=str)
    return [(prefix, text if len(text) <= 160 else text[:157] + "...")]


def environment_rows(dicts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(fact, value) pairs for one dataset's provenance dicts."""
    rows: list[tuple[str, str]] = []
    known = [p for p in dicts if _known(p)]
    for name, fact in FACTS:
        values: list[str] = []
        for p in known:
            v = fact(p)
            if v is not None and str(v) not in values:
                values.append(str(v))
        if values:
            rows.append((name, " | ".join(values)))
    for p in dicts:  # foreign or older provenance: shown as it is, minus per-cell configs
        if not _known(p):
            rows += [r for r in _flat(p) if r not in rows]
    return rows


def environment_frame(provenance: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """One row per dataset and fact; the dataset column only when there are several."""
    rows = [(ds, k, v) for ds, dicts in sorted(provenance.items()) for k, v in environment_rows(dicts)]
    frame = pd.DataFrame(rows, columns=["dataset", "item", "value"])
    return frame.drop(columns="dataset") if frame["dataset"].nunique() <= 1 else frame
