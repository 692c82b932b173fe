"""The tests' forked ``python -m`` runs (tests/zygote.py) behave as a fresh interpreter would, where the tests look."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests import zygote
from tests.sweep_cli import run_module

PROBE = '''
import atexit, json, os, random, sys
atexit.register(lambda: print("atexit ran", flush=True))
print(json.dumps({"name": __name__, "argv": sys.argv[1:], "cwd": os.getcwd(), "path0": sys.path[0],
                  "pythonpath": [p for p in sys.path if p.endswith("extra-dir")], "env": os.environ.get("PROBE_VALUE"),
                  "stdin": sys.stdin.read(), "random": random.random(), "preloaded": "pandas" in sys.modules,
                  "numpy_random": __import__("numpy").random.random(),
                  "pid": os.getpid()}))
print("to stderr", file=sys.stderr)
if "--sleep" in sys.argv:
    import time
    time.sleep(60)
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
'''


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    (tmp_path / "probe.py").write_text(PROBE)
    return tmp_path


def _probe(cwd: Path, *args: str, timeout: float = 60, **env: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    result = run_module("probe", *args, cwd=cwd, timeout=timeout,
                        env=dict(os.environ, PYTHONPATH=str(cwd / "extra-dir"), **env))
    return result, json.loads(result.stdout.splitlines()[0])


def test_a_forked_run_sees_what_a_fresh_python_m_sees(probe_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forked, seen = _probe(probe_dir, "a=1", "--flag", PROBE_VALUE="x", PROBE_EXIT="3")
    assert seen["preloaded"], "not forked from the zygote: the comparison below would compare fresh with fresh"
    monkeypatch.setenv(zygote.FRESH, "1")
    fresh, expected = _probe(probe_dir, "a=1", "--flag", PROBE_VALUE="x", PROBE_EXIT="3")
    assert not expected["preloaded"]
    for key in ("name", "argv", "cwd", "path0", "pythonpath", "env", "stdin"):
        assert seen[key] == expected[key], key
    assert seen["name"] == "__main__" and seen["argv"] == ["a=1", "--flag"] and seen["path0"] == str(probe_dir)
    assert seen["pythonpath"] == [str(probe_dir / "extra-dir")] and seen["stdin"] == ""
    assert forked.returncode == fresh.returncode == 3
    assert forked.stdout.splitlines()[1:] == fresh.stdout.splitlines()[1:] == ["atexit ran"]
    assert forked.stderr == fresh.stderr == "to stderr\n"


def test_each_forked_run_is_a_process_of_its_own_with_its_own_random_draws(probe_dir: Path) -> None:
    (_, first), (_, second) = _probe(probe_dir), _probe(probe_dir)
    assert first["preloaded"] and second["preloaded"]
    assert first["pid"] != second["pid"] != os.getpid()
    assert first["random"] != second["random"] and first["numpy_random"] != second["numpy_random"]


def test_a_run_past_its_timeout_is_killed_and_the_next_run_still_works(probe_dir: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_module("probe", "--sleep", cwd=probe_dir, timeout=2, env=dict(os.environ))
    _, seen = _probe(probe_dir)
    assert seen["preloaded"]


def test_an_environment_the_preloaded_libraries_read_at_import_runs_fresh(probe_dir: Path) -> None:
    _, seen = _probe(probe_dir, OPENBLAS_NUM_THREADS=str(os.cpu_count() or 1) + "7")
    assert not seen["preloaded"]
    _, seen = _probe(probe_dir, LANG="C", LC_ALL="")       # no locale: UTF-8 all the same, as the zygote's
    assert seen["preloaded"]

