"""Provenance: truthful facts, stored in every cell file and in _run.json, shown in the report, no secrets."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pyarrow
import pyarrow.parquet as pq
import pytest

from sweep.provenance import git_state, model_record, package_versions, record_run
from sweep.contract import PROVENANCE_KEY, cell_paths, trial_files
from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import REPO, only_sweep, run_sweep


def test_git_state_matches_git() -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    state = git_state(REPO)
    assert state["commit"] == head.stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    assert state["dirty"] is bool(dirty)


def test_git_state_outside_a_checkout_is_null(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_package_versions_are_the_installed_ones() -> None:
    versions = package_versions()
    assert versions["pyarrow"] == pyarrow.__version__
    assert versions["hydra-core"] == "1.3.8"


def test_model_record_takes_digest_from_tags_and_details_from_show() -> None:
    show = {"details": {"family": "gemma3", "parameter_size": "268.10M", "quantization_level": "Q4_K_M"}}
    record = model_record(show, {"digest": "a5fd3b62", "details": {}})
    assert record == {"digest": "a5fd3b62", "family": "gemma3", "parameter_size": "268.10M",
                      "quantization_level": "Q4_K_M", "format": None}


@pytest.fixture
def sweep_dir(standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-provenance-secret-1234")
    standin.queue(Script(), Script())
    result = run_sweep("-m", "backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
                       "trials=1", "warmup=0", "chimera.num_ctx=256,512", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    return only_sweep(tmp_path)


def test_every_cell_file_and_run_json_carry_the_environment(sweep_dir: Path) -> None:
    run = json.loads((sweep_dir / "_run.json").read_text())
    assert run["python"] == platform.python_version() == sys.version.split()[0]
    assert run["packages"]["pyarrow"] == pyarrow.__version__
    assert run["server"] == {"backend": "ollama", "version": "0.12.3",    # the stand-in's /api/version
                             "parallel": None,                          # its slots: no `ollama serve` to ask
                             "parallel_source": "unknown: a running server's own setting (OLLAMA_NUM_PARALLEL "
                                                "where `ollama serve` runs)"}
    assert set(run["models"]) == {"gemma3:latest"}
    assert run["machine"]["cpu_count"] >= 1 and run["machine"]["ram_gb"] > 0
    assert run["tool"]["version"] == "0.1.0"
    cells = cell_paths(sweep_dir)
    assert len(cells) == 2 and len(run["cells"]) == 2            # both jobs merged, neither overwritten
    files = trial_files(sweep_dir)
    assert {f.parent for f in files} == set(cells)
    for f in files:   # every data file (each part of each cell)
        meta = json.loads(pq.read_schema(f).metadata[PROVENANCE_KEY])
        assert meta["python"] == run["python"] and meta["models"] == run["models"]
        assert meta["config"]["chimera"]["num_ctx"] in (256, 512)
        assert any(arg.startswith("chimera.num_ctx=") for arg in meta["command"])
        assert run["cells"][f.parent.stem]["config"] == meta["config"]


def test_no_secret_value_in_any_stored_file(sweep_dir: Path) -> None:
    for path in sweep_dir.rglob("*"):
        if path.is_file():
            assert b"sk-provenance-secret-1234" not in path.read_bytes(), path
    run = json.loads((sweep_dir / "_run.json").read_text())
    assert run["cells"][next(iter(run["cells"]))]["config"]["backend"]["api_key_env"] == "OLLAMA_API_KEY"


def test_report_header_shows_the_environment(sweep_dir: Path) -> None:
    from analysis.load import load
    from analysis.report import build

    report = build(load([sweep_dir]), figures=False)
    env = report.markdown.split("## Environment", 1)[1].split("\n## ", 1)[0]
    assert f"| python | {platform.python_version()} |" in env
    assert "| server | ollama server, version 0.12.3 |" in env
    assert "pyarrow " + pyarrow.__version__ in env
    assert "config" not in env   # the full config stays in _run.json


def test_run_file_merges_every_writer_and_is_not_rewritten_unchanged(tmp_path: Path) -> None:
    """Jobs add their cells; another process's cells survive; a job that changes nothing writes nothing."""
    env = {"python": "3.x", "config": {"k": 1}, "command": ["x"]}
    record_run(tmp_path, env, {"a": {"config": {"k": 1}}})
    record_run(tmp_path, env, {"b": {"config": {"k": 2}}})
    path = tmp_path / "_run.json"
    other = json.loads(path.read_text())                        # a parallel job of another process
    other["cells"]["c"] = {"config": {"k": 3}}
    path.write_text(json.dumps(other))
    record_run(tmp_path, {**env, "python": "3.y"}, {"d": {"config": {"k": 4}}})
    expected = {"python": "3.y", "cells": {"a": {"config": {"k": 1}}, "b": {"config": {"k": 2}},
                                           "c": {"config": {"k": 3}}, "d": {"config": {"k": 4}}}}
    assert path.read_text() == json.dumps(expected, indent=2)  # the newest environment, every cell once
    before = path.stat().st_ino
    record_run(tmp_path, {**env, "python": "3.y"}, {"b": {"config": {"k": 2}}})   # a resumed cell
    assert path.stat().st_ino == before
