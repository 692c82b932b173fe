"""Live progress in a real pseudo-terminal (``script``), and the plain line-per-trial fallback."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ollama_standin import Script, StandIn
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
    assert not re.search(r"^    trial \d", text, re.M)           # no plain per-trial lines under the panel
    assert "next: python -m analysis" in text and "--open" in text


def test_progress_false_prints_one_plain_line_per_trial(standin: StandIn, tmp_path: Path) -> None:
    text = _in_pty(_args(standin, tmp_path, "progress=false"))
    assert len(re.findall(r"^    trial [01] prompt 0: \d+\.\d tok/s, TTFT \d+ ms, 10 tokens$", text, re.M)) == 6
    assert "sweep cells" not in text


def test_without_a_terminal_the_output_is_plain(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep(*_args(standin, tmp_path))
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"^    trial [01] prompt 0: ", result.stderr, re.M)) == 6
    assert "\x1b[" not in result.stderr and "sweep cells" not in result.stderr
