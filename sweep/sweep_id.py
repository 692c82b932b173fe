"""Pin the sweep id on the command line before Hydra starts.

Every job of a multirun (also in other processes, with the joblib or Ray
launchers) must write into one sweep directory; a timestamp resolved per
process could differ.  So the id is fixed once, up front: a new timestamp, or
with ``resume=true`` the newest existing sweep (unless ``sweep_id=`` is given).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sweep.contract import SWEEPS_ROOT, newest_sweep


def _value(argv: list[str], key: str) -> str | None:
    for arg in argv[1:]:
        if arg.startswith(f"{key}="):
            return arg.split("=", 1)[1]
    return None


def pin_sweep_id(argv: list[str]) -> Path:
    """Append ``sweep_id=...`` to ``argv`` if missing; return the sweep directory."""
    root = Path(_value(argv, "output_root") or SWEEPS_ROOT)
    given = _value(argv, "sweep_id")
    if given:
        return root / given
    if any(a in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c") for a in argv[1:]):
        return root
    resume = (_value(argv, "resume") or "").lower() in ("true", "1", "yes")
    previous = newest_sweep(root) if resume else None
    if previous is not None:
        sweep_id = previous.name
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        sweep_id, n = stamp, 2
        while (root / sweep_id).exists():
            sweep_id, n = f"{stamp}-{n}", n + 1
    argv.append(f"sweep_id={sweep_id}")
    return root / sweep_id
