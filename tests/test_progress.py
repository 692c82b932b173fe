"""Live progress in a real pseudo-terminal (``script``), and the plain line-per-trial fallback."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import REPO, run_sweep

pytestmark = pytest.mark.slow   # whole reports, several engines or a browser: seconds per test

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _in_pty(args: list[str]) -> str:
    """Run ``python -m sweep`` with a terminal as stdout/stderr; the terminal's text without escape codes."""
    if shutil.which("script") is None:
        pytest.fail("`script` (util-linux) is needed for the pseudo-terminal test")
    cmd = " ".join([sys.executable, "-m", "sweep", *args])
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"], "TERM": "xterm-256color", "COLUMNS": "160",
           "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(["script", "-qfec", cmd, "/dev/null"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    return ANSI.sub("", result.stdout.replace("\r", ""))


def _args(standin: StandIn, root: Path, *extra: str) -> list[str]:
    standin.default = Script(tokens=["tok"] * 10, first_token_delay_s=0.02, token_interval_s=0.02)
    return ["-m", "backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
            "chimera.num_ctx=256,512,1024", "trials=2", f"output_root={root}", *extra]


def test_live_panel_in_a_terminal(standin: StandIn, tmp_path: Path) -> None:
    text = _in_pty(_args(standin, tmp_path))
    assert "sweep cells 0/3" in text and "sweep cells 3/3" in text and "ETA" in text
    assert re.search(r"cell chimera gemma3:latest num_gpu=80 num_ctx=\d+ .*: trial [0-2]/2", text)
    assert re.search(r"last: trial 1 prompt 0: \d+\.\d tok/s, TTFT \d+ ms, 10 tokens", text)
    assert text.count("✓ chimera gemma3:latest") == 3 and "2/2 trials ok" in text
    assert "#1 :" not in text and "#2 :" not in text             # Hydra's per-job lines do not scroll the panel
    assert "trials" not in "".join(re.findall(r"^sweep cells.*$", text, re.M))   # blocked: the cells panel as ever
    assert not re.search(r"^    trial \d", text, re.M)           # no plain per-trial lines under the panel
    assert "next: python -m analysis" in text and "--open" in text


def test_progress_false_prints_one_plain_line_per_trial(standin: StandIn, tmp_path: Path) -> None:
    text = _in_pty(_args(standin, tmp_path, "progress=false"))
    assert len(re.findall(r"^    trial [01] prompt 0: \d+\.\d tok/s, TTFT \d+ ms, 10 tokens$", text, re.M)) == 6
    assert "sweep cells" not in text


def test_without_a_terminal_the_output_is_a_plain_line_per_job(standin: StandIn, tmp_path: Path) -> None:
    standin.queue(Script(fault="http_500"))   # one failed attempt (retried): a log shows it
    result = run_sweep(*_args(standin, tmp_path))
    assert result.returncode == 0, result.stderr
    done = re.findall(r"^✓ chimera gemma3:latest num_gpu=80 num_ctx=(\d+) .*: 2/2 trials ok, (\d) failed attempts?, "
                      r"complete \(\d+\.\d s\)$", result.stderr, re.M)
    assert sorted(int(ctx) for ctx, _ in done) == [256, 512, 1024] and sum(int(n) for _, n in done) == 1
    assert len(re.findall(r"^    warm-up 0 attempt 1: http_error HTTP 500", result.stderr, re.M)) == 1
    assert not re.search(r"^    trial \d prompt 0: \d", result.stderr, re.M)    # no line per successful trial
    assert "#0 :" not in result.stderr and "Launching" not in result.stderr        # nor Hydra's per-job lines
    assert "\x1b[" not in result.stderr and "sweep cells" not in result.stderr


def test_progress_false_without_a_terminal_prints_every_trial(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep(*_args(standin, tmp_path, "progress=false"))
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"^    trial [01] prompt 0: ", result.stderr, re.M)) == 6


# A random-order multirun: the quickstart grid (5 cells) × 3 trials as 3 rounds of one job per cell.
ROUNDS_HEAD = re.compile(r"sweep cells (\d+)/(\d+)  trials (\d+)/(\d+)  elapsed (\d+):(\d\d)  ETA (?:(\d+):(\d\d)|–)")


def _random_multirun(standin: StandIn, root: Path, *extra: str) -> list[str]:
    standin.default = Script(tokens=["tok"] * 10, first_token_delay_s=0.02, token_interval_s=0.02)
    return ["-m", "+experiment=quickstart", "grid.fixed.num_predict=8", "backend=ollama",
            f"backend.base_url={standin.base_url}", "model=gemma3", "telemetry.enabled=false", "order_seed=7",
            "warmup=1", f"output_root={root}", *extra]


def test_random_order_panel_counts_a_cell_done_after_its_last_round_and_the_sweeps_trials(
        standin: StandIn, tmp_path: Path) -> None:
    text = _in_pty(_random_multirun(standin, tmp_path, "trials=3"))
    heads = [tuple(int(g) if g is not None else None for g in m.groups()) for m in ROUNDS_HEAD.finditer(text)]
    assert heads, text[-3000:]
    assert {(h[1], h[3]) for h in heads} == {(5, 15)}          # cells and trials of the sweep, not its 15 jobs
    # every cell's last trial is in round 3: no cell is done before 10 trials are, then one per trial
    assert all(cells <= max(0, trials - 10) for cells, _, trials, *_ in heads)
    assert heads[-1][:4] == (5, 5, 15, 15)
    assert text.count("✓ ") == 5 and "more rounds to come" not in text   # the panel shows the rounds' jobs
    assert re.findall(r"^round (\d) of 3: 5 cell\(s\)$", text, re.M) == ["1", "2", "3"]
    for _, _, trials, _, minutes, seconds, eta_m, eta_s in heads:   # ETA = time per trial so far × trials left
        if trials == 0:
            assert eta_m is None
            continue
        elapsed, eta, left = 60 * minutes + seconds, 60 * eta_m + eta_s, (15 - trials) / trials
        assert elapsed * left - 1 <= eta <= (elapsed + 1) * left     # the panel shows whole seconds of both
    assert re.search(r"^random order: \d+ extra warm-up\(s\)", text, re.M)   # a line of its own, not in the panel


def test_plain_lines_of_a_random_multirun_finish_each_cell_once_at_its_last_round(
        standin: StandIn, tmp_path: Path) -> None:
    rng = random.Random(5)

    def script(body: dict) -> Script:   # the baseline (no num_ctx) is noisy: 5 rounds; the chimera cells steady: 3
        noisy = (body.get("options") or {}).get("num_ctx") is None
        duration = int(rng.uniform(0.5, 1.5) * 4e8) if noisy else 400_000_000
        return Script(tokens=["a", "b", "c"], first_token_delay_s=0.002, token_interval_s=0.001,
                      eval_duration=duration)

    args = _random_multirun(standin, tmp_path, "trials=auto", "auto.min_trials=3", "auto.max_trials=5",
                            "order_seed=3", "progress=false")   # a line per trial, and one per job
    standin.script_for = script
    result = run_sweep(*args)
    assert result.returncode == 0, result.stderr
    states = re.findall(r"^  \d+/\d+ trials ok, \d+ failed attempts, (.+)$", result.stderr, re.M)
    # 4 chimera cells × 3 round jobs + the baseline's 5: each cell's last one finishes it, the others say so
    assert len(states) == 17 and states.count("more rounds to come") == 12
    assert [s for s in states if s != "more rounds to come"] == ["complete"] * 5
    assert "sweep cells" not in result.stderr
