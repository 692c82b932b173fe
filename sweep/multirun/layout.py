"""Where a sweep's files go: Hydra's output directory *is* the sweep directory.

The trials of a multirun go to ``hydra.sweep.dir``, those of a single run to
``hydra.run.dir``; ``conf/config.yaml`` builds both from ``output_root`` and
``sweep_id``, which remain the defaults.  So every way of choosing the place
works the same: ``hydra.sweep.dir=X`` (the usual Hydra way), ``output_root=``,
``++output_root=``, ``sweep_id=``, or values set in an experiment file.  Hydra's
own files go under ``_hydra/`` inside it (a ``_`` name: not trial data).

Every process of a multirun (joblib, Ray) must agree on one directory, and a
``${now:}`` timestamp resolved in each process would not.  So :func:`pin`
composes the config exactly as Hydra will, before Hydra starts, and fixes
``sweep_id`` on the command line: a new timestamp, the newest sweep with
``resume=true``, or, when the directory was given directly (``hydra.sweep.dir=X``),
that directory's name, so a resume of X labels its rows with the same id.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from sweep.contract import HYDRA_DIR, SWEEPS_ROOT, newest_sweep
from sweep.cells import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Files Hydra's sweepers write straight into hydra.sweep.dir; moved under _hydra/ so that
# pandas.read_parquet(<sweep dir>) meets only Parquet (it fails on any other file it sees).
SWEEPER_FILES = ("multirun.yaml", "optimization_results.yaml")
_INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c", "--shell-completion", "-sc")
_VALUE_FLAGS = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd", "--package", "-p",
                "--experimental-rerun")
_PINNED = ("sweep_id", "output_root", "resume", "hydra.sweep.dir", "hydra.run.dir")


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


def _split(argv: list[str]) -> tuple[list[str], dict[str, str], bool]:
    """argv → (overrides, flag values, multirun)."""
    overrides: list[str] = []
    flags: dict[str, str] = {}
    multirun = False
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in _VALUE_FLAGS:
            flags[arg] = next(args, "")
        elif arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            flags[name] = value
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, flags, multirun


def _compose(overrides: list[str], flags: dict[str, str]) -> Any:
    """The root config with its ``hydra`` node, composed as ``@hydra.main`` will compose it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    swept = sorted({o.key_or_group for o in parsed if o.is_sweep_override()} & set(_PINNED))
    if swept:
        raise ConfigError(f"{', '.join(swept)} cannot take several values in one sweep: run one sweep per value")
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    extra = flags.get("--config-dir") or flags.get("-cd")
    if extra:   # as Hydra's --config-dir: one more place to find config groups
        fixed.append(f"hydra.searchpath=[file://{Path(extra).resolve()}]")
    name = flags.get("--config-name") or flags.get("-cn") or "config"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="__main__"):
        return compose(config_name=name, overrides=fixed, return_hydra_config=True)


def pin(argv: list[str]) -> Path:
    """Fix ``sweep_id`` on ``argv`` when the config leaves it to the clock; return the sweep directory.

    Raises :class:`ConfigError` for a pinned key given several values.  A config
    Hydra cannot compose is left to Hydra, which reports it as one line.
    """
    from omegaconf import OmegaConf

    overrides, flags, multirun = _split(argv)
    if any(a.split("=", 1)[0] in _INFO_FLAGS for a in argv[1:]):
        return Path(SWEEPS_ROOT)
    try:
        cfg = _compose(overrides, flags)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 — Hydra itself will say what is wrong, in its own words
        return Path(SWEEPS_ROOT)
    OmegaConf.set_readonly(cfg, False)
    node = "sweep" if multirun or is_multirun(cfg.hydra) else "run"
    template = OmegaConf.to_container(cfg, resolve=False)

    def dir_for(sweep_id: str) -> Path:
        probe = OmegaConf.create(template)
        probe.sweep_id = sweep_id
        return Path(probe.hydra[node].dir)

    if not OmegaConf.is_interpolation(cfg, "sweep_id"):    # set on the command line or in an experiment
        return dir_for(str(cfg.sweep_id))
    if dir_for("a") == dir_for("b"):                       # hydra.*.dir=X given: X names the sweep
        chosen = dir_for("a")
        argv.append(f"sweep_id={chosen.name}")
        return chosen
    root = Path(cfg.output_root)
    previous = newest_sweep(root) if cfg.resume else None
    if previous is not None:
        sweep_id = previous.name
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        sweep_id, n = stamp, 2
        while dir_for(sweep_id).exists():
            sweep_id, n = f"{stamp}-{n}", n + 1
    argv.append(f"sweep_id={sweep_id}")
    return dir_for(sweep_id)
