"""Fixtures, and the fast/slow split: ``python -m pytest -m "not slow"`` answers in seconds.

A test is ``slow`` when it starts the real engine (the ``embedded_server`` fixture, or an
``Engine``/``Llama`` in-process) or another process (``python -m sweep``/``analysis``, a
stand-in process, a launcher), itself, through one of its fixtures or through a helper of the
test suite it calls; those are found by reading their source, so a new test of that kind is
classified without anyone remembering to.  Anything
else slow carries ``@pytest.mark.slow`` by hand.  ``make test`` runs everything.

A test is ``exclusive`` (run alone under pytest-xdist: ``tests/machine_share.py`` says why) when it runs
the real engine or a llama.cpp tool, found the same way, unless it carries ``shares_machine`` (it checks what
the engine answers, not how fast); anything else that needs the machine to itself carries
``@pytest.mark.exclusive`` by hand.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import re

import pytest
from hypothesis import HealthCheck, Phase, settings

# Property tests (tests/test_properties.py): a few examples in the fast set, many with
# ``--hypothesis-profile=thorough``.  No deadline: an example runs the whole analysis, whose time the
# shared machine's load decides; derandomized so the fast set is the same run every time, and without
# shrinking there (a failure prints the example as drawn; the thorough profile shrinks it).
settings.register_profile("fast", max_examples=10, deadline=None, derandomize=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate],
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("fast")

pytest_plugins = ["tests.fixtures_server", "tests.fixtures_standin", "tests.machine_share"]

#: the real engine or a llama.cpp tool: slow and exclusive (``Engine(``/``Llama(``: in-process, as in
#: tests/test_server_generation.py)
ENGINE_FIXTURES = frozenset({"embedded_server", "http"})
ENGINE_CALLS = ("require_engine(", "require_tool(", "Engine(", "Llama(", "load_llama(")
#: another process: slow
SPAWN_CALLS = ("run_sweep(", "run_module(", "sweep_argv(", "subprocess.", "Popen(")


_CALLED = re.compile(r"\b([A-Za-z_]\w*)\(")


#: file -> {first line of a function (its first decorator's) -> its last line}, from one ast.parse per file
_SPANS: dict[str, dict[int, int]] = {}


def _spans(filename: str) -> dict[int, int]:
    """Where each function of a file starts and ends: parsing the file once is cheaper than
    ``inspect.getsource`` tokenizing from each function's first line (~550 of them)."""
    if filename not in _SPANS:
        spans: dict[int, int] = {}
        try:
            tree = ast.parse(linecache.getlines(filename) and "".join(linecache.getlines(filename)))
        except (SyntaxError, ValueError):
            tree = ast.Module(body=[], type_ignores=[])
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                spans[min([node.lineno, *(d.lineno for d in node.decorator_list)])] = node.end_lineno
        _SPANS[filename] = spans
    return _SPANS[filename]


def _source(func: object) -> str:
    code = getattr(func, "__code__", None)
    if code is not None and (end := _spans(code.co_filename).get(code.co_firstlineno)):
        return "".join(linecache.getlines(code.co_filename)[code.co_firstlineno - 1:end])
    try:
        return inspect.getsource(func)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""


#: ``func`` -> (its source, the test-suite helpers it calls), read once per session: ~900 items share a
#: few hundred functions and fixtures, and re-reading (tokenizing) their source for each item was a
#: third of the collection time.
_READ: dict[object, tuple[str, list[object]]] = {}


def _read(func: object) -> tuple[str, list[object]]:
    if func not in _READ:
        source = _source(func)
        names = getattr(func, "__globals__", {})
        helpers = [names[name] for name in sorted(set(_CALLED.findall(source)))
                   if inspect.isfunction(names.get(name)) and names[name].__module__.startswith("tests")]
        _READ[func] = (source, helpers)
    return _READ[func]


def _with_helpers(func: object, seen: set[object]) -> str:
    """The source of ``func`` and of the test-suite helpers it calls, transitively.

    A helper such as ``_analyse`` that wraps ``subprocess.run`` makes its callers slow too:
    reading only the test's own source missed them (15 tests that each start ``python -m
    analysis`` ran with the fast set).
    """
    if func in seen:
        return ""
    seen.add(func)
    source, helpers = _read(func)
    return source + "".join(_with_helpers(helper, seen) for helper in helpers)


def _source_of(item: pytest.Item) -> str:
    """The source of the test, of its fixtures and of the test-suite helpers they call."""
    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        funcs += [d.func for d in defs]
    seen: set[object] = set()
    return "".join(_with_helpers(f, seen) for f in funcs if f is not None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow and the exclusive tests; skip ``@pytest.mark.gpu`` tests, saying why, where no GPU build
    can run."""
    from tests.gpu import gpu_missing_reason

    for item in items:
        engine = bool(ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())))
        source = "" if engine else _source_of(item)
        engine = engine or any(call in source for call in ENGINE_CALLS)
        if "slow" not in item.keywords and (engine or any(call in source for call in SPAWN_CALLS)):
            item.add_marker(pytest.mark.slow)
        if engine and "exclusive" not in item.keywords and "shares_machine" not in item.keywords:
            item.add_marker(pytest.mark.exclusive)
    reason = gpu_missing_reason() if any("gpu" in item.keywords for item in items) else None
    if reason:
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"needs a GPU: {reason}"))
