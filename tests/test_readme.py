"""The README and docs/ are part of the product: their promises are checked here.

Shape (a README read in five minutes, lines a terminal shows whole), links that lead somewhere, the column
reference generated from :mod:`sweep.contract`, every configuration key that exists, and the same words for the
same behaviour in the docs and in ``--help``. The commands they show are run in ``tests/test_doc_commands.py``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sweep.config import register
from sweep.contract import COLUMN_NAMES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
# pages other branches add (the regression gate, importing another harness's trials): linked before they land
PENDING = {"docs/gate.md", "docs/import.md"}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_readme_is_short() -> None:
    assert len(README.splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_line_is_longer_than_120_characters(page: Path) -> None:
    long = [n for n, line in enumerate(_text(page).splitlines(), 1) if len(line) > 120]
    assert long == [], f"{page.name}: lines over 120 characters: {long}"


def test_first_screen_gives_exactly_the_two_make_commands() -> None:
    first_screen = README.split("---", 1)[0]
    commands = re.findall(r"^make (\w+)", first_screen, flags=re.M)
    assert commands == ["demo", "test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in commands:
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"Makefile has no '{target}' target"
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].endswith("make test")


def test_the_readme_explains_its_words_and_says_what_make_test_installs() -> None:
    first_screen = README.split("---", 1)[0]
    for words in ("**chimera**", "**baseline**", "TR108–TR114", "server's own defaults", "apt-get", "root",
                  ".venv/", "make tools"):
        assert words in first_screen, f"the README's first screen does not say {words!r}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", _text(page), flags=re.M)}


def _links(page: Path) -> list[str]:
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", _text(page)) if "://" not in target]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_leads_to_a_page_and_heading(page: Path) -> None:
    broken = []
    for link in _links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        name = target.relative_to(ROOT).as_posix() if target.is_relative_to(ROOT) else str(target)
        if name in PENDING and not target.exists():
            continue
        if not target.exists() or (anchor and target.suffix == ".md" and anchor not in _anchors(target)):
            broken.append(link)
    assert broken == [], f"{page.name}: broken links {broken}"


def test_the_readme_links_every_docs_page_and_the_pending_ones() -> None:
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in _links(ROOT / "README.md")}
    missing = [p.name for p in DOCS if p.resolve() not in linked]
    assert missing == [], f"docs pages the README does not link: {missing}"
    assert {(ROOT / p).resolve() for p in PENDING} <= linked


def test_the_column_reference_is_generated_from_the_contract() -> None:
    spec = importlib.util.spec_from_file_location("columns_page", ROOT / "scripts" / "columns_page.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert _text(ROOT / "docs" / "columns.md") == generator.page(), (
        "docs/columns.md is stale: run python scripts/columns_page.py")
    documented = re.findall(r"^- `([a-z0-9_]+)` \(", _text(ROOT / "docs" / "columns.md"), flags=re.M)
    assert documented == list(COLUMN_NAMES)


def test_the_backend_column_names_every_backend_kind() -> None:
    from sweep.contract import COLUMNS
    from sweep.backends.kinds import KINDS

    BACKEND_KINDS = list(KINDS)
    doc = next(c.doc for c in COLUMNS if c.name == "backend")
    assert all(f"`{kind}`" in doc for kind in BACKEND_KINDS), doc
    assert {p.stem for p in (ROOT / "conf" / "backend").glob("*.yaml")} == set(BACKEND_KINDS)


def test_several_analysis_inputs_are_side_by_side_in_the_docs_and_in_help() -> None:
    """``python -m analysis A B`` keys every cell by its sweep (``analysis/load.py``): never pooled, never 'concatenated'."""
    from analysis.__main__ import parser

    help_text = " ".join(parser().format_help().split())
    assert "side by side" in help_text and "never pooled" in help_text and "concatenated" not in help_text
    for page in (ROOT / "README.md", ROOT / "docs" / "analysis.md"):
        line = next(l for l in _text(page).splitlines() if re.match(r"python -m analysis \S+/A \S+/B", l))
        assert "side by side, never pooled" in line, f"{page.name}: {line}"


def test_report_sections_are_named_not_numbered() -> None:
    """Reports number only the sections they have, so the docs refer to a section by its name."""
    from analysis.report import SECTIONS

    names = [re.sub(r"^\d+\.\s*", "", heading) for _, heading, _ in SECTIONS]
    analysis_page = _text(ROOT / "docs" / "analysis.md") + _text(ROOT / "docs" / "agents.md")
    for name in names:
        assert f"**{name}**" in analysis_page, f"docs do not describe the report section {name!r}"
    for page in PAGES:
        assert not re.search(r"\b(Table|section) \d+\b", _text(page)), f"{page.name} refers to a section by number"


def _sweeps_page() -> str:
    return _text(ROOT / "docs" / "sweeps.md")


def _documented_keys() -> list[str]:
    """Keys named in the first column of the configuration table of docs/sweeps.md.

    ``model=`` names a group; ``backend.retries` / `.retry_backoff_s`` style cells share the prefix of the first key.
    """
    section = _sweeps_page()[_sweeps_page().index("## Configuration keys"):]
    end = section.find("\n## ", 1)
    section = section if end < 0 else section[:end]
    keys: list[str] = []
    for row in re.findall(r"^\| (.+?) \| ", section, flags=re.M)[1:]:  # [0] is the header row
        prefix = ""
        for token in re.findall(r"`([a-z_.=/]+)`", row):
            token = token.rstrip("=")
            if token.startswith("."):
                token = prefix + token
            else:
                prefix = token.split(".")[0]
            keys.append(token)
    return keys


def test_the_configuration_table_is_parsed() -> None:
    keys = _documented_keys()
    assert {"model", "chimera.num_ctx", "backend.retry_backoff_s", "trials", "warmup", "hydra/sweeper"} <= set(keys)


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
    for part in key.replace("/", ".").split("."):
        assert part in node, f"docs/sweeps.md documents '{key}' but the config has no such key"
        node = node[part]


def test_every_top_level_config_key_is_documented(default_cfg: DictConfig) -> None:
    """The other way round: a key added to the config without its line in the table fails."""
    documented = {k.split(".")[0] for k in _documented_keys()}
    missing = sorted(k for k in default_cfg if k not in documented and k not in ("hydra", "grid", "cell"))
    assert missing == [], f"config keys docs/sweeps.md does not document: {missing}"
