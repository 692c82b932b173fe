"""Fixtures, and the fast/slow split: ``python -m pytest -m "not slow"`` answers in seconds.

A test is ``slow`` when it starts the real engine (the ``embedded_server`` fixture) or
another process (``python -m sweep``/``analysis``, a stand-in process, a launcher), itself
or through one of its fixtures; those are found by reading the test's and its fixtures'
source, so a new test of that kind is classified without anyone remembering to.  Anything
else slow carries ``@pytest.mark.slow`` by hand.  ``make test`` runs everything.
"""

from __future__ import annotations

import inspect

import pytest

pytest_plugins = ["tests.fixtures_server", "tests.fixtures_standin"]

SLOW_FIXTURES = frozenset({"embedded_server", "http"})
SLOW_CALLS = ("run_sweep(", "run_module(", "sweep_argv(", "subprocess.", "Popen(")


def _source(func: object) -> str:
    try:
        return inspect.getsource(func)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""


def _spawns(item: pytest.Item) -> bool:
    if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        funcs += [d.func for d in defs]
    return any(call in _source(f) for f in funcs if f is not None for call in SLOW_CALLS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tests; skip ``@pytest.mark.gpu`` tests, saying why, where no GPU build can run."""
    from tests.gpu import gpu_missing_reason

    for item in items:
        if "slow" not in item.keywords and _spawns(item):
            item.add_marker(pytest.mark.slow)
    reason = gpu_missing_reason() if any("gpu" in item.keywords for item in items) else None
    if reason:
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"needs a GPU: {reason}"))
