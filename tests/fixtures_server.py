"""Pytest fixtures for the embedded server: one real server per test session.

Why session scope: starting the server is cheap (~0.2 s) but the first load of
Gemma 3 270M costs ~0.4 s and every test would pay it; one shared server on
127.0.0.1 with the real model keeps the suite near a minute on 2 cores.
Tests that unload or reload models leave it serving, so sharing is safe.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import httpx
import pytest

from sweep.server import launch


def _require_engine() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (python scripts/install_engine.py)")


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[launch.EmbeddedServer]:
    """A running ``python -m sweep.server`` on a free port of 127.0.0.1."""
    _require_engine()
    server = launch.start(startup_timeout_s=180.0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(embedded_server: launch.EmbeddedServer) -> Iterator[httpx.Client]:
    """An httpx client on the session server (generous read timeout: real generation)."""
    with httpx.Client(base_url=embedded_server.base_url, timeout=httpx.Timeout(120.0, connect=10.0)) as client:
        yield client
