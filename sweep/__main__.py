"""``python -m sweep``: run a Hydra (multi)run of cells against an Ollama-compatible server.

Thin on purpose: it hands the config to :func:`sweep.job.run_job` and turns configuration errors and Ctrl-C into
one line and an exit code; the sweep directory is fixed by a Hydra callback (:mod:`sweep.multirun.layout`).
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sweep.multirun import cli_errors, layout, outdir, shorthands
from sweep.config import register
from sweep.cells import ConfigError
from sweep.multirun.layout import sweep_dir, tidy_hydra_files
from sweep.store import SweepDirLost

register()


def _stop_embedded() -> None:
    """Stop the servers this process started: only sweep.backends.processes starts them, so a process that never
    imported it (--help, a bad override) has none and skips the import."""
    if (processes := sys.modules.get("sweep.backends.processes")) is not None:
        processes.stop_embedded()


def _is_search(hc: Any) -> bool:
    """A sweeper that proposes cells (Optuna) rather than enumerating a grid."""
    return hc.mode.name == "MULTIRUN" and "optuna" in str(hc.sweeper.get("_target_", ""))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the cell's objective (``objective.*``) to a search sweeper: what it optimises."""
    # here, not at the top: --help and a bad override exit before any job, without their ~0.5 s of imports
    from sweep.job import freeze_imports, run_job
    from sweep.multirun.launchers import parallel_slots, shared_host_problem

    freeze_imports()
    hc = HydraConfig.get()
    directory = sweep_dir(hc)
    tidy_hydra_files(directory)
    search = _is_search(hc)
    try:
        if search and not cfg.allow_shared_host:   # the grid sweeper checks this before any job
            problem = shared_host_problem(cfg.backend, parallel_slots(hc.launcher, int(hc.sweeper.n_jobs)))
            if problem:
                raise ConfigError(problem)
        return run_job(cfg, directory, search=search, overrides=list(hc.overrides.task))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        _stop_embedded()
        raise SystemExit(2) from None
    except SweepDirLost as exc:   # every trial is saved elsewhere; no later job could write either
        print(f"error: {exc}", file=sys.stderr, flush=True)
        _stop_embedded()
        raise SystemExit(1) from None


def _run() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # hydra/launcher=ray: no usage report over the network
    # The modules loaded by now (pyarrow, Hydra; the job's modules: main) live as long as the process:
    # out of the collector's way, a full collection in a multirun's jobs takes milliseconds, not ~100 ms.
    gc.freeze()
    cli_errors.flags_first(sys.argv)
    if note := shorthands.model_names(sys.argv):   # model=llama3.2:1b, as `ollama run` takes it
        print(note, file=sys.stderr, flush=True)
    try:
        cli_errors.run(main)
    except KeyboardInterrupt:
        _stop_embedded()
        place = layout.fixed()
        if place is not None and outdir.holds_trials(place.directory):
            args = " ".join(place.resume_args(sys.argv[1:]))
            print(f"\ninterrupted: every completed trial is saved in {place.directory}\n"
                  f"resume with: python -m sweep {args} resume=true", file=sys.stderr, flush=True)
        else:
            args = " ".join(sys.argv[1:])
            print(f"\ninterrupted before any trial was stored\nrun it again with: python -m sweep {args}",
                  file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    finally:
        _stop_embedded()
        place = layout.fixed()
        if place is not None:   # a run that stored no trial leaves no directory behind
            outdir.drop_if_empty(place.directory, place.existed)


if __name__ == "__main__":
    _run()
