"""Every command the README and docs/ show is exercised.

Each one is read out of the pages (```bash blocks, and inline code spans that start with ``python`` or ``make``)
and checked by what will run it: ``python -m sweep`` commands are composed by Hydra with our schemas (a sweep such
as ``a=1,2`` takes its first value), ``python -m analysis``/``sweep.server`` commands are parsed by their own
argument parsers, ``python -m benchmarks`` names must exist, ``make`` targets must be in the Makefile. The README's
sweep commands are also run through the real CLI as dry runs, and its main chain (a baseline-vs-chimera sweep,
resume, the report, two sweeps side by side, the gate) runs for real against the stand-in server.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from sweep.config import register
from sweep.multirun.shorthands import model_names
from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import cli_env, run_module

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_PREFIXES = ("python -m ", "python scripts/", "make ")


def _commands(page: Path) -> list[str]:
    """The command lines a page shows, continuation lines joined."""
    text = page.read_text(encoding="utf-8")
    found: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        found += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    found += [span for span in re.findall(r"`([^`\n]+)`", text) if span.startswith(PYTHON_PREFIXES)]
    return found


SHOWN = [(page.relative_to(ROOT).as_posix(), command) for page in PAGES for command in _commands(page)]


def _readme_table_commands() -> list[str]:
    """The README's 'ten commands' block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## The ten commands"):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_pages_show_commands_and_the_readme_ten() -> None:
    assert len(SHOWN) > 40
    assert len(_readme_table_commands()) == 10


def _concrete(overrides: list[str]) -> list[str]:
    """Hydra overrides with every sweep (``a=1,2``, ``choice(…)``, ``range(…)``) replaced by its first value."""
    out = []
    for override, text in zip(OverridesParser.create().parse_overrides(overrides), overrides):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            out.append(f"{text.split('=', 1)[0]}={first}")
        else:
            out.append(text)
    return out


def _check_sweep(args: list[str]) -> None:
    args = [a for a in args if a not in ("-m", "--multirun")]
    if "--help" in args:
        assert args == ["--help"]
        return
    if "--cfg" in args:
        i = args.index("--cfg")
        assert args[i + 1] in ("job", "hydra", "all")
        del args[i:i + 2]
    argv = ["sweep", *args]
    model_names(argv)              # model=<a name the server knows> → model.name=, as python -m sweep does first
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        compose(config_name="config", overrides=_concrete(argv[1:]), return_hydra_config=True)


def _check_analysis(args: list[str]) -> None:
    from analysis.__main__ import parser

    try:
        parser().parse_args(args)
    except SystemExit as exc:     # --help exits 0; a bad option exits 2
        assert exc.code == 0, f"python -m analysis rejects {args}"


def _check_benchmarks(args: list[str]) -> None:
    from benchmarks.__main__ import BENCHMARKS

    for arg in args:
        assert arg in BENCHMARKS or arg in ("--quick", "--tiny"), f"python -m benchmarks has no {arg}"


def _check_server(args: list[str]) -> None:
    from sweep.server.__main__ import parse_args

    parse_args(args)


def _check_script(script: str, args: list[str]) -> None:
    source = (ROOT / script).read_text(encoding="utf-8")
    for arg in args:
        assert arg.startswith("--") and f'"{arg}"' in source, f"{script} has no option {arg}"


def _check_make(args: list[str]) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert len(args) == 1 and re.search(rf"^{re.escape(args[0])}:", makefile, flags=re.M), f"no make {args}"


def _case(page: str, command: str) -> object:
    """One shown command as a test case; a ``python -m sweep`` one is slow.

    Hydra composes the whole configuration for each (~0.2 s on a quiet core; ~50 of them were a fifth of the
    ``-m "not slow"`` set), so they run with ``make test``; the other commands are parsed in milliseconds.
    """
    slow = shlex.split(command, comments=True)[:3] == ["python", "-m", "sweep"]
    return pytest.param(page, command, id=f"{page}: {command[:60]}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("page, command", [_case(p, c) for p, c in SHOWN])
def test_every_shown_command_parses(page: str, command: str, tmp_path: Path) -> None:
    argv = shlex.split(command, comments=True)
    if argv[:3] == ["python", "-m", "analysis.importers.generate"]:
        from analysis.importers.generate import example

        assert len(argv) == 4 and any(example(tmp_path).rglob("metrics.json")), "the example folders were not written"
    elif argv[:3] == ["python", "-m", "sweep"]:
        _check_sweep(argv[3:])
    elif argv[:3] == ["python", "-m", "sweep.server"]:
        _check_server(argv[3:])
    elif argv[:3] == ["python", "-m", "analysis"]:
        _check_analysis(argv[3:])
    elif argv[:3] == ["python", "-m", "benchmarks"]:
        _check_benchmarks(argv[3:])
    elif argv[0] == "python" and argv[1].startswith("scripts/"):
        _check_script(argv[1], argv[2:])
    elif argv[0] == "make":
        _check_make(argv[1:])
    else:
        pytest.fail(f"{page} shows a command no test knows how to check: {command}")


def _run(argv: list[str], cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """A shown ``python -m`` command, as written, plus ``extra`` overrides, from ``cwd`` (its relative paths
    resolve there)."""
    assert argv[:2] == ["python", "-m"], argv
    return run_module(argv[2], *argv[3:], *extra, cwd=cwd, env=cli_env(repo_on_path=True), timeout=600)


def test_the_readme_sweep_commands_plan_without_measuring(tmp_path: Path) -> None:
    """Each of the README's sweep commands, as a dry run through the real CLI: its plan prints, nothing is created."""
    for command in _readme_table_commands():
        argv = shlex.split(command, comments=True)
        if argv[:3] != ["python", "-m", "sweep"]:
            continue
        out = tmp_path / "out"
        extra = [] if "dry_run=true" in argv else ["dry_run=true"]
        run = _run(argv, tmp_path, *extra, f"output_root={out}")
        assert run.returncode == 0, f"{command}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
        assert "cell" in run.stdout, f"{command}: no plan printed\n{run.stdout[-2000:]}"
        assert not out.exists() or not any(out.iterdir()), f"{command}: a dry run created {list(out.iterdir())}"


def _fast(standin: StandIn) -> None:
    standin.default = Script(tokens=["a", "b", "c"], first_token_delay_s=0.002, token_interval_s=0.001)


def test_the_readme_main_chain_runs(tmp_path: Path, standin: StandIn) -> None:
    """The README's sweep → resume → report → side by side → gate, each command as written (from a directory where
    ``outputs/sweeps`` is the default output root), the server redirected to the stand-in."""
    _fast(standin)
    at_standin = ["backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
                  "telemetry.enabled=false", "backend.retry_backoff_s=0"]
    table = {c.split("#")[0].strip(): shlex.split(c, comments=True) for c in _readme_table_commands()}
    sweep = table["python -m sweep -m chimera=baseline,optimized trials=10"]
    for name in ("A", "B"):
        run = _run(sweep, tmp_path, *at_standin, f"sweep_id={name}")
        assert run.returncode == 0, run.stderr[-2000:]
    sweeps = tmp_path / "outputs" / "sweeps"
    assert sorted(p.name for p in sweeps.iterdir()) == ["A", "B"]
    resume = _run(table["python -m sweep -m chimera=baseline,optimized resume=true"], tmp_path, *at_standin)
    assert resume.returncode == 0, resume.stderr[-2000:]
    for command in ("python -m analysis", "python -m analysis outputs/sweeps/A outputs/sweeps/B"):
        run = _run(table[command], tmp_path, "--no-figures")
        assert run.returncode == 0, f"{command}\n{run.stderr[-2000:]}"
    (sweeps / "NEW").symlink_to(sweeps / "A")
    (sweeps / "OLD").symlink_to(sweeps / "B")
    gate = _run(table["python -m analysis outputs/sweeps/NEW --against outputs/sweeps/OLD --gate"], tmp_path,
                "--no-figures")
    # 0 pass, 1 regression, 3 inconclusive (the stand-in's scripted timings have no spread to test); 2 is bad input
    assert gate.returncode in (0, 1, 3), gate.stderr[-2000:]
    assert any(line.startswith("gate: ") for line in (gate.stdout + gate.stderr).splitlines()), gate.stdout
