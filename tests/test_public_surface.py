"""The public surface of each package: what scripts may import, and that it is enough.

Each package's ``__init__`` declares ``__all__`` (with a docstring saying what it is for).  Here:
every declared name resolves; a tiny real sweep → read → analyse runs on those names only; and
tests and scripts import nothing else from the packages unless :data:`INTERNAL` says why.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.testing.standin import StandIn

ROOT = Path(__file__).resolve().parent.parent
SURFACES = ("sweep", "sweep.server", "analysis", "benchmarks")
PACKAGES = ("sweep", "analysis", "benchmarks", "hydra_plugins")

_UNIT = "unit tests of this module's internals"
#: Internal modules that tests and scripts import, and why a public name would not do.
INTERNAL: dict[str, str] = {
    "sweep.contract": "the contract's own tests (part names, to_table, provenance key, options) and "
                      "records built field by field",
    "sweep.cells": "Cell, Prompt, ConfigError and cell_hash: unit tests build cells without Hydra",
    "sweep.plan": "plan_cells and the load order: unit tests plan cells from a composed config",
    "sweep.config": "register() the structured config before composing conf/ in-process, and typed(): the "
                    "typed config the planning functions take",
    "sweep.multirun.cli_errors": "one_line: a choice key's refusal while composing, without a subprocess per value",
    "sweep.runner": "measuring one call against the stand-in, and the timing maths on exact stamps",
    "sweep.backends.stream": "the stream format base class and line kinds, " + _UNIT,
    "sweep.backends.ollama": "the NDJSON stream format and request bodies, " + _UNIT,
    "sweep.backends.kinds": "the backend kind records and the format a backend speaks, " + _UNIT,
    "sweep.backends.openai": "the OpenAI SSE stream format, " + _UNIT,
    "sweep.backends.http": "the streaming HTTP client, for the old-vs-new reference path",
    "sweep.store": "append-only parts and merges, atomic writes, " + _UNIT,
    "sweep.syncs": "the fsyncs owed by atomic writes and paid in the background, " + _UNIT,
    "sweep.running": "the flock registry of running cells, " + _UNIT,
    "sweep.interrupts": "Ctrl-C that cannot be absorbed, with real signals to the test process, " + _UNIT,
    "sweep.order": "round_order: the permutation a multirun's rounds must follow, predicted by the order tests",
    "sweep.multirun.rounds": "the multirun's order and its round overrides, " + _UNIT,
    "sweep.multirun.jobs": "Hydra's basic grid and override_dirname on the public API, against Hydra's own",
    "sweep.backends.processes": "a local Ollama's OLLAMA_NUM_PARALLEL read from a stand-in process's environment, "
                                + _UNIT,
    "sweep.backends.hosts": "the order a round's jobs take the servers in, " + _UNIT,
    "sweep.multirun.layout": "where a sweep directory is fixed (Place): each way of choosing sweep_id, " + _UNIT,
    "sweep.multirun.preflight": "the dry run's duration estimate on hand-computed histories, " + _UNIT,
    "sweep.telemetry": "the sampler against a fake NVML, " + _UNIT,
    "sweep.provenance": "the provenance record, " + _UNIT,
    "sweep.workloads.prompts": "prompt files, " + _UNIT,
    "sweep.workloads.agents": "multi-agent plans, " + _UNIT,
    "sweep.workloads.ingest": "the agent workflow's input data, " + _UNIT,
    "sweep.workloads.loadgen": "load arrivals, the SLO test, goodput and the knee's bisection, " + _UNIT,
    "sweep.workloads.lengths": "the exact-N prompt search on counters with known answers, " + _UNIT,
    "sweep.background": "other processes' CPU from hand-computed /proc snapshots, " + _UNIT,
    "sweep.objective": "the search objective, " + _UNIT,
    "sweep.adaptive": "the trials=auto stopping rule's half-width on hand-computed values, " + _UNIT,
    "sweep.backends.llama_server": "llama-server's flags, " + _UNIT,
    "sweep.backends.llama_tools": "where llama-server/llama-bench live: fixtures and scripts/install_engine.py "
                         "must agree with the sweep on it",
    "sweep.server.__main__": "the listening socket (TCP_NODELAY), " + _UNIT,
    "sweep.server.models": "the model registry (which GGUF files are installed), " + _UNIT,
    "sweep.server.options": "option parsing and the contract's ranges, " + _UNIT,
    "sweep.server.engine": "stop-sequence matching, and the engine in-process against Llama.generate "
                           "(token identity), " + _UNIT,
    "sweep.server.templates": "chat templates, " + _UNIT,
    "sweep.server.streaming": "streamed responses written by the worker thread, served by a real uvicorn whose "
                              "event loop the test blocks, " + _UNIT,
    "sweep.server.vram": "GPU detection for the gpu-marked tests",
    "analysis.summary_json": "the schema of _report/summary.json: docs/summary.md is generated from it and every "
                             "written file is validated against it",
    "sweep.multirun.shorthands": "model=name:tag rewritten to model.name= on a plain argv, " + _UNIT,
    "analysis.__main__": "its argument parser: the docs' analysis commands are parsed by it, its --help wording "
                         "checked against theirs",
    "sweep.testing.standin": "the scripted Ollama/OpenAI stand-in server the tests measure against",
    "sweep.testing.sync_reference": "the measuring path before the async core, for the old-vs-new test",
    "analysis.load": "the loader's derived columns and its live-read path, " + _UNIT,
    "analysis.tables": "statistics tables on hand-computed data (report-level tests)",
    "analysis.distributions": "the t, F, χ² and noncentral tail functions against scipy.stats, " + _UNIT,
    "analysis.render": "Markdown/CSV/LaTeX rendering of a table, " + _UNIT,
    "analysis.report": "the report header and files, " + _UNIT,
    "analysis.stats": "descriptive statistics and tests, " + _UNIT,
    "analysis.intervals": "confidence intervals, " + _UNIT,
    "analysis.capacity": "the load section's capacity CI and per-run goodput, " + _UNIT,
    "analysis.flags": "the offload, servers and shared-CPU flags, " + _UNIT,
    "analysis.power": "power analysis, " + _UNIT,
    "analysis.gate": "the gate's tests, verdicts and MDE on hand-computed sweeps (compare, GateResult), " + _UNIT,
    "analysis.client_share": "the client-side share, " + _UNIT,
    "analysis.importers": "the kept conversion's file names and the f32 clean-up, " + _UNIT,
    "analysis.importers.common": "reading the harness files' fields and numbers, " + _UNIT,
    "analysis.importers.generate": "example folders in the old harnesses' formats, written as the tests' fixtures",
    "analysis.background": "which cells ran beside other processes' CPU, " + _UNIT,
    "analysis.columns": "the contract test checks it holds no copy of the contract",
    "analysis.brief": "the terminal summary: its verdict and warning lines on hand-computed data, compared number "
                      "for number with the report (property tests)",
    "analysis.figures": "a figure that cannot be drawn, replaced to check the report's skip line",
    "sweep.multirun.summary": "the end-of-sweep summary's interval of a cell, compared with the report's",
    "benchmarks.__main__": "the goals table (GOALS) the benchmark run prints",
    "benchmarks.fidelity": "the fidelity benchmark at a tiny size, against the server's send times",
    "benchmarks.engine": "the engine benchmark's CPU meter against a real embedded server, " + _UNIT,
    "benchmarks.anchor": "run_trials, the trial loop the CPU meter wraps, " + _UNIT,
    "benchmarks.pp_tg": "prompt and decode tok/s from a pp_tg sweep's rows, by hand, " + _UNIT,
}


@pytest.mark.parametrize("package", SURFACES)
def test_every_public_name_resolves_and_is_documented(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__doc__ and len(module.__doc__) > 80, f"{package}/__init__.py: say what scripts may import"
    assert isinstance(module.__all__, list) and len(set(module.__all__)) == len(module.__all__)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == [], f"{package}.__all__ names {missing}, which {package} does not provide"
    # a public name equal to a submodule's is shadowed by the module once anything imports it
    clashes = [name for name in module.__all__ if importlib.util.find_spec(f"{package}.{name}") is not None]
    assert clashes == [], f"{package}.__all__ names {clashes}, which are also submodules"


@pytest.mark.parametrize("package, heavy", [("sweep", ("pyarrow", "hydra", "httpx", "aiohttp")),
                                            ("analysis", ("pandas", "scipy", "matplotlib"))])
def test_importing_a_package_stays_cheap(package: str, heavy: tuple[str, ...]) -> None:
    """``import sweep`` (and ``python -m sweep.server``, which imports it first) loads no heavy dependency."""
    code = f"import sys, {package}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def _imports(path: Path) -> set[str]:
    """The project modules (or ``package:name`` public names) a file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in PACKAGES:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = importlib.util.find_spec(node.module) is not None and \
                    importlib.util.find_spec(node.module).submodule_search_locations is not None and \
                    importlib.util.find_spec(sub) is not None
                found.add(sub if is_module else f"{node.module}:{alias.name}")
    return found


def _users() -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for path in sorted([*(ROOT / "tests").glob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        for name in _imports(path):
            users.setdefault(name, []).append(path.name)
    return users


def test_tests_and_scripts_import_the_public_surface_or_say_why() -> None:
    users = _users()
    wrong = []
    for name, files in sorted(users.items()):
        module, _, attr = name.partition(":")
        if attr and module in SURFACES and attr in importlib.import_module(module).__all__:
            continue                                   # a public name
        if not attr and (module in PACKAGES or module in INTERNAL):
            continue                                   # the package itself, or an internal module with a reason
        if attr and module in INTERNAL:
            continue                                   # a name from an internal module with a reason
        wrong.append(f"{name} ({', '.join(files)})")
    assert wrong == [], ("import these through the package's __all__, or add the module to INTERNAL "
                         f"in {Path(__file__).name} with the reason: {wrong}")
    stale = sorted(set(INTERNAL) - {name.partition(":")[0] for name in users})
    assert stale == [], f"INTERNAL lists modules nothing imports any more: {stale}"


@pytest.mark.slow   # a real `python -m sweep` (Hydra start-up, ~3 s)
def test_sweep_read_analyse_through_the_public_names_only(tmp_path: Path) -> None:
    """A stand-in sweep of two cells, read with the contract's reader, analysed: public names only."""
    import analysis
    import sweep

    with StandIn() as standin:
        directory = sweep.run("-m", "backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
                              "chimera.preset=baseline,chimera", "trials=3", "warmup=0", "telemetry.enabled=false",
                              f"output_root={tmp_path / 'sweeps'}", cwd=tmp_path, timeout=300)
    assert directory.parent == tmp_path / "sweeps" and sweep.newest_sweep(tmp_path / "sweeps") == directory
    cells = sweep.cell_paths(directory)
    assert len(cells) == 2 and [p for c in cells for p in sweep.trial_files(c)]
    tables = [sweep.read_cell(c) for c in cells]
    assert all(t.schema.names[:len(sweep.COLUMN_NAMES)] == list(sweep.COLUMN_NAMES) for t in tables)
    rows = [r for t in tables for r in t.to_pylist()]
    assert len(rows) == 6 and {sweep.Status(r["status"]) for r in rows} == {sweep.Status.OK}
    assert sorted(r["preset"] for r in rows) == ["baseline"] * 3 + ["chimera"] * 3
    assert sum(t.num_rows for _, t in sweep.read_tables(directory)) == 6

    loaded = analysis.load_trials([directory])
    report = analysis.build(loaded, analysis.Options(test="mannwhitney"), out_dir=tmp_path / "report", figures=False)
    assert report.out_dir == tmp_path / "report" and (report.out_dir / "report.html").is_file()
    assert "baseline" in report.markdown and "chimera" in report.markdown
    assert analysis.main([str(directory), "--no-figures", "--quiet", "--out", str(tmp_path / "again")]) == 0
    with pytest.raises(analysis.InputError):
        analysis.load_trials([tmp_path / "no-such-sweep"])
