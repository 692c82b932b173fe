"""What a newcomer touches first, driven through the real CLI as they would type it.

Each test re-tries one way a first sweep went wrong: a dry run that measured, an address the
default backend ignored, the OpenAI command that failed as written, a failed run that left an
empty sweep behind, a damaged part that stopped a resume, a file where the sweep directory goes.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sweep.contract import CORRUPT_DIR, newest_sweep
from sweep.config import typed
from sweep.plan import plan_cells
from sweep.multirun.preflight import ASSUMED_RELOAD_S, Planned, _duration, estimate_s
from tests.fixtures_server import require_engine
from sweep.testing.standin import StandIn
from tests.sweep_cli import REPO, cli_env, only_sweep, run_module, run_sweep, trials_of


def _ollama(standin: StandIn, root: Path) -> list[str]:
    return ["backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3", f"output_root={root}"]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------- 2. the dry run never measures


def test_an_estimate_that_is_not_a_number_reads_unknown() -> None:
    assert _duration(math.nan) == "unknown" and _duration(math.inf) == "unknown"
    assert _duration(62.4) == "1 min 02 s" and _duration(3725) == "1 h 02 min"


def test_a_history_without_server_timings_falls_back_to_the_request_time(compose_cfg) -> None:
    (cell,) = plan_cells(typed(compose_cfg("backend=ollama", "model=gemma3", "chimera.num_predict=100")))
    planned = [Planned(cell, 3, 1, 0, True)]          # 3 trials + 1 warm-up, one load
    # an OpenAI server reports no timings: tok/s and load time are NaN, only the request time is known
    seconds, basis = estimate_s(planned, {cell.model: (1.5, math.nan, math.nan)})
    assert seconds == pytest.approx(4 * 1.5 + ASSUMED_RELOAD_S) and "from earlier sweeps" in basis
    # with tok/s known, the token budget scales the request: 4 × (0.3 + 100 / 50) + a measured 0.5 s load
    seconds, _ = estimate_s(planned, {cell.model: (1.5, 50.0, 0.5)})
    assert seconds == pytest.approx(4 * (0.3 + 100 / 50) + 0.5)


@pytest.mark.parametrize("multirun", [False, True])
def test_a_dry_run_after_an_openai_sweep_prints_the_plan_and_sends_nothing(standin: StandIn, tmp_path: Path,
                                                                        multirun: bool) -> None:
    first = run_sweep("backend=openai", f"backend.base_url={standin.base_url}/v1", "model=gemma3", "chimera=baseline",
                      "trials=2", "warmup=0", f"output_root={tmp_path}")
    assert first.returncode == 0, first.stderr[-2000:]
    history = trials_of(tmp_path)
    assert history["load_duration_ms"].isna().all()   # no load time over /v1: the estimate used to be NaN
    hits, before = len(standin.hits), sorted(tmp_path.iterdir())
    dry = run_sweep(*(["-m"] if multirun else []), *_ollama(standin, tmp_path), "dry_run=true")
    assert dry.returncode == 0, dry.stderr[-2000:]
    # 4 requests (1 warm-up + 3 trials) × the median request time measured, + one assumed load
    expected = 4 * history["e2e_ms"].median() / 1e3 + ASSUMED_RELOAD_S
    assert f"estimated duration: {_duration(expected)} (from earlier sweeps of gemma3:latest)" in dry.stdout
    assert "Traceback" not in dry.stderr and "nothing was sent" in dry.stdout
    assert len(standin.hits) == hits and sorted(tmp_path.iterdir()) == before


# ---------------------------------------------------------------- 3. an address needs a backend that uses it


@pytest.mark.parametrize("override, names", [
    ("backend.base_url=ftp://x", ("backend=ollama", "backend=openai")),
    ("backend.base_url=http://127.0.0.1:9", ("backend=ollama", "backend=openai")),
    ("backend.hosts=[http://127.0.0.1:9]", ("backend=ollama",)),
])
def test_an_address_with_the_embedded_backend_is_one_line(tmp_path: Path, override: str, names: tuple[str, ...]) -> None:
    result = run_sweep(override, f"output_root={tmp_path}")
    assert result.returncode == 2
    (line,) = _lines(result.stderr)
    assert line.startswith("error: backend.") and "ignored by backend=embedded" in line
    assert all(name in line for name in names), line
    assert list(tmp_path.iterdir()) == []              # nothing measured, no engine started, no directory


def test_an_address_with_llama_server_is_refused_in_a_multirun_too(tmp_path: Path) -> None:
    result = run_sweep("-m", "backend=llama_server", "backend.base_url=http://127.0.0.1:9", "trials=1,2",
                       f"output_root={tmp_path}")
    assert result.returncode == 2
    assert _lines(result.stderr)[-1].startswith("error: backend.base_url=http://127.0.0.1:9 is ignored by "
                                                "backend=llama_server")
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- 4. the OpenAI command as documented


def test_the_documented_openai_command_runs_and_a_refusal_names_every_option(standin: StandIn, tmp_path: Path) -> None:
    documented = ["backend=openai", f"backend.base_url={standin.base_url}/v1", "model.name=gemma3:latest",
                  "chimera=baseline"]
    result = run_sweep(*documented, f"output_root={tmp_path / 'ok'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (trials_of(tmp_path / "ok")["status"] == "ok").all()

    without = [a for a in documented if a != "chimera=baseline"]    # the default preset sets num_gpu and num_ctx
    refused = run_sweep(*without, f"output_root={tmp_path / 'no'}")
    assert refused.returncode == 2
    (line,) = _lines(refused.stderr)
    assert line.startswith("error: options num_gpu, num_ctx cannot be sent to backend=openai")
    assert "chimera=baseline" in line and "chimera.num_gpu=null chimera.num_ctx=null" in line

    sent = len(standin.requests)
    fixed = run_sweep(*without, "chimera.num_gpu=null", "chimera.num_ctx=null", f"output_root={tmp_path / 'fix'}")
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    body = standin.requests[sent]
    assert body["temperature"] == 0.8 and body["top_k"] == 40 and "num_ctx" not in body


# ---------------------------------------------------------------- 5. a run that measured nothing


@pytest.mark.parametrize("multirun", [False, True])
def test_a_run_that_measured_nothing_leaves_no_directory(tmp_path: Path, multirun: bool) -> None:
    existing = tmp_path / "kept"
    existing.mkdir()
    result = run_sweep(*(["-m"] if multirun else []), "backend=ollama", "backend.base_url=http://127.0.0.1:9",
                       f"output_root={tmp_path}")
    assert result.returncode == 2 and "cannot reach the server" in result.stderr
    assert list(tmp_path.iterdir()) == [existing]
    again = run_sweep("backend=ollama", "backend.base_url=http://127.0.0.1:9", f"output_root={tmp_path}",
                      "sweep_id=kept")
    assert again.returncode == 2 and existing.is_dir()    # a directory the run did not make is never removed


def test_the_newest_sweep_is_the_newest_with_trials(tmp_path: Path) -> None:
    old, empty = tmp_path / "old", tmp_path / "new"
    (old / "a.parquet").mkdir(parents=True)
    (old / "a.parquet" / "part-00000000-00000000.parquet").write_bytes(b"")
    (empty / "_hydra").mkdir(parents=True)
    os.utime(old, (1, 1))
    assert newest_sweep(tmp_path) == old
    (old / "a.parquet" / "part-00000000-00000000.parquet").unlink()
    assert newest_sweep(tmp_path) is None


def test_analysis_without_a_path_skips_a_directory_without_trials(standin: StandIn, tmp_path: Path) -> None:
    root = tmp_path / "outputs" / "sweeps"
    ran = run_sweep(*_ollama(standin, root), "trials=2", "warmup=0")
    assert ran.returncode == 0, ran.stderr[-2000:]
    sweep = only_sweep(root)
    (root / "zzz-left-by-an-older-version" / "_hydra").mkdir(parents=True)   # newer, and only Hydra's files
    result = run_module("analysis", "--no-figures", cwd=tmp_path, env=cli_env(repo_on_path=True))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"analysing the newest sweep: {Path('outputs/sweeps') / sweep.name}" in result.stderr


# ---------------------------------------------------------------- 6. a damaged part on resume


def _damage(part: Path) -> None:
    data = bytearray(part.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64
    part.write_bytes(bytes(data[:-20]))                # the footer cut: no reader can open it


@pytest.mark.parametrize("multirun", [False, True])
def test_resume_moves_a_damaged_part_aside_and_measures_exactly_its_trials(standin: StandIn, tmp_path: Path,
                                                                         multirun: bool) -> None:
    args = [*(["-m"] if multirun else []), *_ollama(standin, tmp_path), "sweep_id=s", "warmup=0"]
    assert run_sweep(*args, "trials=2").returncode == 0
    assert run_sweep(*args, "trials=4", "resume=true").returncode == 0     # a second part: trials 2 and 3
    (cell,) = (tmp_path / "s").glob("*.parquet")
    first, second = sorted(cell.glob("part-*.parquet"))
    _damage(first)
    dry = run_sweep(*args, "trials=4", "resume=true", "dry_run=true")
    assert dry.returncode == 2 and "1 unreadable part(s)" in dry.stderr and first.exists()   # a dry run moves nothing
    sent = len(standin.sent)
    result = run_sweep(*args, "trials=4", "resume=true")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    moved = [line for line in result.stderr.splitlines() if "unreadable part" in line]
    assert moved == [f"unreadable part moved aside to {CORRUPT_DIR}/: {cell.name}/{first.name} "
                     "(the resume measures its trials again)"]
    assert (tmp_path / "s" / CORRUPT_DIR / cell.name / first.name).is_file() and second.is_file()
    assert len(standin.sent) - sent == 2                # the two trials the part held, nothing else
    df = pd.read_parquet(tmp_path / "s")
    assert sorted(df.loc[~df["warmup"], "trial"]) == [0, 1, 2, 3] and (df["status"] == "ok").all()


def test_a_damaged_part_without_resume_is_one_line(standin: StandIn, tmp_path: Path) -> None:
    args = [*_ollama(standin, tmp_path), "sweep_id=s", "warmup=0", "trials=1"]
    assert run_sweep(*args).returncode == 0
    (part,) = (tmp_path / "s").glob("*.parquet/part-*.parquet")
    _damage(part)
    result = run_sweep(*args)
    assert result.returncode == 2
    assert _lines(result.stderr)[-1].endswith("add resume=true to move unreadable parts aside and measure their "
                                              "trials again")
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- 7. a file where the sweep directory goes


@pytest.mark.parametrize("multirun", [False, True])
def test_a_file_in_the_sweep_directorys_place_is_one_line(tmp_path: Path, multirun: bool) -> None:
    (tmp_path / "log").write_text("not a sweep")
    result = run_sweep(*(["-m"] if multirun else []), f"output_root={tmp_path}", "sweep_id=log")
    assert result.returncode == 2
    assert _lines(result.stderr) == [f"error: the sweep directory {tmp_path / 'log'} exists and is not a directory: "
                                     "choose another sweep_id= (or output_root=), or move that file away"]
    assert (tmp_path / "log").read_text() == "not a sweep"


# ---------------------------------------------------------------- 9. counts that say what they count


def _run_rows(kind: str, trial: int, agents: tuple[int, ...], ok: bool = True) -> list[dict]:
    run = f"{kind}-{trial}-{agents}"
    return [{"cell_hash": "h", "warmup": False, "workflow_id": f"{run}-{a}", "run_id": run, "run_kind": kind,
             "agent_id": a, "agents": 2, "trial": trial, "stage": stage, "status": "ok" if ok else "stall"}
            for a in agents for stage in ("analysis", "report")]


def test_a_multi_agent_cells_runs_are_counted_by_kind() -> None:
    from sweep.workloads.agents import runs_ok_text

    rows = [r for t in range(3) for r in _run_rows("concurrent", t, (0, 1))]
    rows += [r for t in range(3) for a in (0, 1) for r in _run_rows("isolated", t, (a,))]
    assert runs_ok_text(rows, "h", 2, 3, None) == "3/3 concurrent runs + 6/6 isolated runs (3 per agent) ok"
    # a failed concurrent run, an isolated run beyond isolated_runs=2, another cell's rows: none count
    rows = [r for r in rows if not (r["run_kind"] == "concurrent" and r["trial"] == 1)]
    rows += _run_rows("concurrent", 1, (0, 1), ok=False) + [dict(r, cell_hash="other") for r in rows]
    assert runs_ok_text(rows, "h", 2, 3, 2) == "2/3 concurrent runs + 4/4 isolated runs (2 per agent) ok"


def test_the_multi_agent_progress_and_summary_count_runs_not_trials(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep(*_ollama(standin, tmp_path), "workload=multi_agent", "trials=3", "telemetry.enabled=false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert ": 3/3 concurrent runs + 6/6 isolated runs (3 per agent) ok, 0 failed attempts, complete (" in result.stderr
    assert "trials ok" not in result.stderr


def _demo_commands() -> list[list[str]]:
    """The Makefile's ``demo`` recipe, command by command, ``$(PYTHON)`` being this interpreter."""
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M)
    assert recipe, "the Makefile has no demo recipe"
    return [line.strip().replace("$(PYTHON)", sys.executable).split() for line in recipe.group(1).splitlines()]


def _demo_lines(cwd: Path, *sweep_args: str) -> list[str]:
    """What the demo recipe prints (stdout and stderr), run from ``cwd``; ``sweep_args`` go to its sweep."""
    env = cli_env(repo_on_path=True)
    lines: list[str] = []
    for command in _demo_commands():
        if command[1:3] == ["-m", "sweep"]:
            command = [*command, *sweep_args]
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, result.stderr[-3000:]
        lines += (result.stdout + result.stderr).splitlines()
    return lines


def _check_demo(lines: list[str]) -> None:
    shown = "\n".join(lines)
    assert len(lines) <= 40, f"{len(lines)} lines:\n{shown}"
    assert sum(line.startswith("baseline vs chimera") for line in lines) == 1, shown
    assert [line for line in lines if line.startswith("round ")] == [f"round {i} of 3: 5 cell(s)" for i in (1, 2, 3)]
    assert sum(line.startswith("✓ ") for line in lines) == 5, shown
    assert lines[-1].startswith("report written to outputs/sweeps/") and lines[-1].endswith("report.html"), shown


@pytest.mark.timeout(1800)
def test_the_demo_prints_at_most_40_lines_and_its_verdict_once(tmp_path: Path) -> None:
    """``make demo`` after the install, from a fresh directory, without a terminal (as a log or CI sees it).

    The real engine and the demo's own cells, rounds and reloads, with 8 tokens a call instead of 64: what it
    prints does not depend on the length of a generation, and the 64-token calls made this test 81 s of the
    suite's exclusive time (29 s alone now).  ``make demo`` itself runs the 64 tokens.
    """
    require_engine()
    _check_demo(_demo_lines(tmp_path, "grid.fixed.num_predict=8"))
