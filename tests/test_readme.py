"""The README is part of the product: its promises are checked here.

The column table is generated from :mod:`sweep.contract`, so a column added
without its documentation (or a doc edited in one place only) fails the suite.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sweep.config import register
from sweep.contract import COLUMN_NAMES, markdown_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _columns_block() -> str:
    begin = README.index("<!-- columns:begin")
    begin = README.index("\n", begin) + 1
    return README[begin:README.index("<!-- columns:end -->")].strip()


def test_column_table_matches_the_records_module() -> None:
    assert _columns_block() == markdown_table().strip(), (
        "README column table is stale: paste the output of "
        "python -c 'from sweep.contract import markdown_table; print(markdown_table())'"
    )


def test_every_column_is_documented_with_its_name() -> None:
    documented = re.findall(r"^\| `([a-z0-9_]+)` \|", _columns_block(), flags=re.M)
    assert documented == list(COLUMN_NAMES)


def test_first_screen_gives_exactly_the_two_make_commands() -> None:
    first_screen = README.split("---", 1)[0]
    commands = re.findall(r"^make (\w+)", first_screen, flags=re.M)
    assert commands == ["demo", "test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in commands:
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"Makefile has no '{target}' target"
    assert "$(PYTHON) -m pytest" in makefile
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].endswith("make test")


def _documented_keys() -> list[str]:
    """Keys named in the first column of the README's configuration table.

    ``model=`` names a group; ``backend.retries` / `.retry_backoff_s`` style cells
    share the prefix of the first key.
    """
    section = README[README.index("## Configuration keys"):]
    section = section[:section.index("\n## ", 1)]
    keys: list[str] = []
    for row in re.findall(r"^\| (.+?) \| ", section, flags=re.M)[1:]:  # [0] is the header row
        prefix = ""
        for token in re.findall(r"`([a-z_.=]+)`", row):
            token = token.rstrip("=")
            if token.startswith("."):
                token = prefix + token
            else:
                prefix = token.split(".")[0]
            keys.append(token)
    return keys


def test_the_configuration_table_is_parsed() -> None:
    keys = _documented_keys()
    assert {"model", "chimera.num_ctx", "backend.retry_backoff_s", "trials", "warmup"} <= set(keys)


@pytest.fixture(scope="module")
def default_cfg() -> DictConfig:
    """The composed default config, once for the module (~0.2 s a compose, ~40 keys); read only."""
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", return_hydra_config=True)   # hydra.* keys are documented too


@pytest.mark.parametrize("key", _documented_keys())
def test_documented_config_keys_exist(key: str, default_cfg: DictConfig) -> None:
    """Every key in the configuration table resolves in the composed default config."""
    node = default_cfg
    for part in key.split("."):
        assert part in node, f"README documents '{key}' but the config has no such key"
        node = node[part]
