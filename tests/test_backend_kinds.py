"""Backend kinds as data (sweep/backends/kinds.py): each kind's answers come from its record.

The records replace string tests of ``backend.kind`` spread over the code, so these tests
check the records against what the rest of the project assumes of them: a config file per
kind, the config choices Hydra offers, and the behaviour each field selects.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sweep.backends.kinds import FORMATS, KINDS, Start, format_for, kind_named
from sweep.backends.ollama import OLLAMA
from sweep.backends.openai import OPENAI, OpenAISSE
from sweep.cells import ConfigError
from sweep.config import typed
from sweep.plan import plan_cells
from tests.cells import make_cell

CONF = Path(__file__).resolve().parent.parent / "conf" / "backend"


def test_every_kind_has_its_config_file_and_every_file_a_kind() -> None:
    files = {p.stem: p.read_text() for p in CONF.glob("*.yaml")}
    assert set(files) == set(KINDS)
    for name, text in files.items():
        assert f"kind: {name}\n" in text
        api = "openai" if KINDS[name].openai_api else None
        assert (f"api: {api}\n" in text) if api else ("api:" not in text)   # the schema's default api is ollama


def test_an_unknown_kind_is_one_line_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"^invalid backend.kind 'nope': use backend=embedded, backend=ollama, "
                                          r"backend=openai, backend=llama_server(, backend=\w+)*$"):
        kind_named("nope")


ORIGINAL = ("embedded", "ollama", "openai", "llama_server")   # the kinds the string tests knew


def test_the_fields_say_what_the_string_tests_said() -> None:
    kinds = [KINDS[name] for name in ORIGINAL]
    remote = {k.name for k in kinds if k.remote}
    assert remote == {k.name for k in kinds if k.stable_address} == {"ollama", "openai"}
    assert {k.name for k in kinds if k.openai_api} == {"openai", "llama_server"}
    assert KINDS["embedded"].start is Start.EMBEDDED and KINDS["llama_server"].start is Start.LLAMA_SERVER
    assert [k.name for k in kinds if k.several_hosts] == ["ollama"]
    assert [k.name for k in kinds if k.several_instances] == ["embedded"]
    assert all(k.example_url.startswith("http") for k in KINDS.values() if k.remote)


def test_the_api_picks_the_format_and_the_kinds_own_format_wins_when_names_agree() -> None:
    assert FORMATS == {"ollama": OLLAMA, "openai": OPENAI}
    assert all(format_for(SimpleNamespace(kind=k.name, api=k.fmt.name)) is k.fmt for k in KINDS.values())
    assert format_for(SimpleNamespace(kind="ollama", api="openai")) is OPENAI    # Ollama's own /v1
    quirky = OpenAISSE(include_usage=False)
    record = KINDS["openai"].__class__("quirky", Start.REMOTE, quirky, example_url="http://h:1/v1")
    try:
        KINDS["quirky"] = record
        assert format_for(SimpleNamespace(kind="quirky", api="openai")) is quirky
    finally:
        del KINDS["quirky"]


def test_a_format_without_include_usage_sends_no_stream_options() -> None:
    cell = make_cell(backend="openai", endpoint="chat")
    assert OPENAI.request(cell, "hi")[1]["stream_options"] == {"include_usage": True}
    assert "stream_options" not in OpenAISSE(include_usage=False).request(cell, "hi")[1]


@pytest.mark.parametrize("overrides, fragment", [
    (("backend=openai", "backend.base_url=", "model=gemma3"), "backend.base_url is empty: set backend.base_url=http://host:8000/v1"),
    (("backend=ollama", "backend.base_url=", "model=gemma3"), "backend.base_url is empty: set backend.base_url=http://host:11434"),
    (("backend=openai", "backend.hosts=[http://a:1/v1]", "model=gemma3"), "backend.hosts needs backend=ollama"),
    (("backend=embedded", "backend.hosts=[http://a:1]"), "is ignored by backend=embedded, which starts its own server"),
    (("backend=ollama", "backend.instances=2", "model=gemma3"), "more than 1 only with backend=embedded"),
    (("backend=openai", "backend.base_url=http://h:1/v1", "model=gemma3", "chimera.num_ctx=512"),
     "num_gpu, num_ctx cannot be sent to backend=openai"),
])
def test_the_plan_refuses_what_a_kind_cannot_do(compose_cfg, overrides, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        plan_cells(typed(compose_cfg(*overrides)))


def test_remote_kinds_put_their_address_in_the_cell_and_started_ones_do_not(compose_cfg) -> None:
    (remote,) = plan_cells(typed(compose_cfg("backend=ollama", "backend.base_url=http://h:1", "model=gemma3")))
    (started,) = plan_cells(typed(compose_cfg("backend=embedded")))
    assert remote.base_url == "http://h:1" and started.base_url is None
