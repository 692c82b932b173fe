"""Fixtures for the scripted Ollama stand-in and for composing sweep configs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sweep.config import register
from sweep.testing.standin import StandIn

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """Compose the real ``conf/`` with overrides, as ``python -m sweep`` would."""
    register()

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose
