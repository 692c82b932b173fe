"""Run ``python -m sweep`` as a user would, in a subprocess, and read what it stored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def sweep_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sweep", *args]


def run_module(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m <module> args…`` from the repository, output captured."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_sweep(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_module("sweep", *args, timeout=timeout)


def only_sweep(output_root: Path) -> Path:
    (sweep_dir,) = [p for p in output_root.iterdir() if p.is_dir()]
    return sweep_dir


def trials_of(output_root: Path) -> pd.DataFrame:
    return pd.read_parquet(only_sweep(output_root))
