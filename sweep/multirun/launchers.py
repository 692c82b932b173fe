"""What a Hydra launcher's config means for measuring: how many cells can run at once.

Cells measured at the same time against one server slow each other down, so a
parallel launcher needs one server per worker.  The embedded backend starts a
server in every worker process; a remote backend needs ``backend.hosts`` with
at least as many servers as cells that can run at once, or an explicit
``allow_shared_host=true``.  The check runs in the sweeper, before any job.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from sweep.backends.kinds import KINDS, Start
from sweep.config import BackendConfig


def _cpus() -> int:
    return os.cpu_count() or 1


def parallel_slots(launcher: Mapping[str, Any], jobs: int) -> int:
    """Cells that can run at once under this launcher config (at most ``jobs``).

    Unknown launchers, and a Ray cluster given by address (its size is not known
    here), count as fully parallel: the safe assumption for the shared-host check.
    """
    if in_process(launcher):
        return 1
    target = str(launcher.get("_target_", ""))
    if "joblib" in target:
        n = int(launcher.get("n_jobs", -1) or 1)
        slots = n if n > 0 else max(1, _cpus() + 1 + n)
    elif "ray" in target.lower():
        ray = launcher.get("ray") or {}
        init, remote = ray.get("init") or {}, ray.get("remote") or {}
        if init.get("address"):
            slots = jobs
        else:
            per_task = float(remote.get("num_cpus") or 1)
            slots = max(1, int(float(init.get("num_cpus") or _cpus()) // per_task))
    elif "submitit" in target:
        slots = int(launcher.get("array_parallelism") or jobs)
    else:
        slots = jobs
    return max(1, min(slots, jobs))


def in_process(launcher: Mapping[str, Any]) -> bool:
    """The jobs run one after another in the sweeper's own process (Hydra's basic launcher).

    Why it matters: what a job leaves on a server (:mod:`sweep.backends.model_state`) is then the next
    job's, so a multirun in rounds warms up only after a reload; a worker process starts knowing nothing.
    """
    target = str(launcher.get("_target_", ""))
    return target.endswith("BasicLauncher") or not target


def shared_host_problem(backend: BackendConfig, slots: int) -> str | None:
    """The one-line refusal when ``slots`` cells would share a server, else None.

    ``backend``: typed, or its composed node (the search's job asks before its one conversion).
    """
    if slots <= 1 or KINDS[backend.kind].start is Start.EMBEDDED:   # each worker starts its own
        return None
    hosts = list(backend.hosts) or [backend.base_url]
    if len(hosts) >= slots:
        return None
    return (f"{slots} cells would run at once against {len(hosts)} server(s) ({', '.join(map(str, hosts))}) and "
            "slow each other down: give one server per worker (backend.hosts=[URL,URL,...]), run fewer at once, "
            "or accept it with allow_shared_host=true")
