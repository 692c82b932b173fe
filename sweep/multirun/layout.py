"""Where a sweep's files go: Hydra's output directory *is* the sweep directory.

The trials of a multirun go to ``hydra.sweep.dir``, those of a single run to
``hydra.run.dir``; ``conf/config.yaml`` builds both from ``output_root`` and
``sweep_id``, which remain the defaults.  So every way of choosing the place
works the same: ``hydra.sweep.dir=X`` (the usual Hydra way), ``output_root=``,
``++output_root=``, ``sweep_id=``, or values set in an experiment file.  Hydra's
own files go under ``_hydra/`` inside it (a ``_`` name: not trial data).

Every process of a multirun (joblib, Ray) must agree on one directory, and a
``${now:}`` timestamp resolved in each process would not.  So ``sweep_id`` left
open is the cached resolver :func:`sweep.config.new_sweep_id` (a new timestamp,
the newest sweep with ``resume=true``, or the name of a directory given directly,
so a resume of X labels its rows with the same id), and :class:`SweepPlace`, the
first of the run's Hydra callbacks, resolves the directory in the main process
before any job is composed: Hydra copies that answer into every job's config.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sweep.cells import ConfigError
from sweep.contract import HYDRA_DIR
from sweep.multirun import outdir
from sweep.store import ensure_writable

# Files Hydra's sweepers write straight into hydra.sweep.dir; moved under _hydra/ so that
# pandas.read_parquet(<sweep dir>) meets only Parquet (it fails on any other file it sees).
SWEEPER_FILES = ("multirun.yaml", "optimization_results.yaml")
# Keys that place the sweep: one value per sweep (a multirun's jobs share one directory).
_PINNED = ("sweep_id", "output_root", "resume")
# The environment variable naming a file where the run writes its sweep directory (sweep.run reads it).
PLACE_FILE = "CHIMERA_SWEEP_PLACE_FILE"


def is_multirun(hydra: Any) -> bool:
    """``hydra.mode`` of a job's HydraConfig or a callback's ``config.hydra``."""
    mode = hydra.mode
    return getattr(mode, "name", str(mode)).endswith("MULTIRUN")


def sweep_dir(hydra: Any) -> Path:
    """The sweep directory a job or callback writes to, from its ``hydra`` node."""
    return Path(hydra.sweep.dir if is_multirun(hydra) else hydra.run.dir)


def tidy_hydra_files(directory: Path) -> None:
    """Move the files a sweeper wrote beside the trials into ``_hydra/`` (safe to call from every job)."""
    for name in SWEEPER_FILES:
        source = directory / name
        if source.is_file():
            (directory / HYDRA_DIR).mkdir(exist_ok=True)
            try:
                os.replace(source, directory / HYDRA_DIR / name)
            except FileNotFoundError:   # another job of the sweep moved it first
                pass


@dataclass(frozen=True)
class Place:
    """The sweep directory this process's run writes to, as fixed before Hydra made it."""

    directory: Path
    existed: bool      # there before the run: never removed by it (outdir.drop_if_empty)
    open_id: bool      # sweep_id was left to the config: a resume names it (sweep_id=<directory name>)

    def resume_args(self, argv: list[str]) -> list[str]:
        """The command line that continues this run (without ``resume=true``)."""
        return argv + ([f"sweep_id={self.directory.name}"] if self.open_id else [])


_fixed: Place | None = None


def fixed() -> Place | None:
    """The place :class:`SweepPlace` fixed in this process (None when Hydra stopped before it ran)."""
    return _fixed


def refuse_swept_pins(config: DictConfig) -> None:
    """Raise :class:`ConfigError` when a multirun gives a key that places the sweep several values.

    (``hydra.sweep.dir=a,b`` Hydra refuses itself: it sweeps none of its own keys.)
    """
    if not is_multirun(config.hydra):
        return
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    strings = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(strings)
    swept = sorted({o.key_or_group for o in parsed if o.is_sweep_override()} & set(_PINNED))
    if swept:
        raise ConfigError(f"{', '.join(swept)} cannot take several values in one sweep: run one sweep per value")


class SweepPlace(Callback):
    """Fixes the sweep directory once, in the main process, before Hydra or any job makes it.

    Why a callback: ``on_run_start`` / ``on_multirun_start`` get the run's composed config
    before the sweeper composes a job and before Hydra creates the directory, so here the
    directory is resolved (which decides ``sweep_id``, :func:`sweep.config.new_sweep_id`), a
    file in its place or an unwritable parent is one line and exit code 2 instead of Hydra's
    traceback, and whether it existed is noted so a run that stored nothing removes only a
    directory it made (``python -m sweep`` reads :func:`fixed`).  It must come first among the
    callbacks (``conf/config.yaml``): the preflight composes every job from this config.
    Hydra turns an exception raised by a callback into a warning, so every refusal is a
    ``SystemExit``.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._fix(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._fix(config)

    @staticmethod
    def _fix(config: DictConfig) -> None:
        global _fixed
        try:
            refuse_swept_pins(config)
            # Resolved here, while the config still holds its hydra node (a job's config has none), so
            # the answer is in the resolver cache every job's config is given.
            str(config.sweep_id)
            directory = sweep_dir(config.hydra)
            outdir.check_free(directory)       # a file by that name: one line, not Hydra's FileExistsError
            ensure_writable(directory.parent)  # before Hydra creates the sweep directory in it
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        _fixed = Place(directory, directory.exists(), OmegaConf.is_interpolation(config, "sweep_id"))
        note = os.environ.get(PLACE_FILE)
        if note:   # sweep.run() in the parent process waits for this
            Path(note).write_text(str(directory.absolute()), encoding="utf-8")
