"""Backend kinds as data: one frozen record per ``backend.kind``, read wherever a kind matters.

Why records: the kind used to be a string tested about thirty times in six modules (is it
remote? does it take hosts? who starts it? does it speak the OpenAI API?), so a new kind of
server meant edits all over.  Each answer is now a field of :class:`BackendKind`, and a new kind
that speaks an existing wire format is one record in :data:`KINDS` plus its config file under
``conf/backend/`` (whose names are the choices of ``backend.kind``, :class:`sweep.config.BackendName`;
this module refuses to load when a file and a record do not pair up).  ``backend.api`` still picks
the wire format (:data:`FORMATS`); a kind's own :attr:`BackendKind.fmt` is used when the names
agree, so a kind can carry a quirk of its format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sweep.backends.ollama import OLLAMA
from sweep.backends.openai import OPENAI, check_cell
from sweep.backends.stream import StreamFormat
from sweep.cells import ConfigError
from sweep.config import Api, BackendConfig, BackendName


class Start(StrEnum):
    """Who starts the server a kind talks to."""

    REMOTE = "remote"              # nobody here: a running server at backend.base_url / backend.hosts
    EMBEDDED = "embedded"          # our engine (sweep.server), once per process, on 127.0.0.1
    LLAMA_SERVER = "llama_server"  # llama.cpp's llama-server, (re)started per cell with its load-time flags


class EosSwitch(StrEnum):
    """How ``workload.ignore_eos`` reaches a kind's server."""

    NONE = ""            # no switch: Ollama has none (num_predict, a stop-free prompt, short trials flagged)
    OPTION = "option"    # an Ollama option our engine reads
    BODY = "body"        # llama.cpp's and vLLM's OpenAI body extension


@dataclass(frozen=True)
class BackendKind:
    """What the sweep must know about one kind of server."""

    name: str
    start: Start
    fmt: StreamFormat                 # the wire format it speaks (its backend.api)
    example_url: str = ""             # remote: the base_url to suggest when none is set
    several_hosts: bool = False       # backend.hosts=[URL, URL] (agents spread round-robin)
    several_instances: bool = False   # backend.instances=N servers started here
    eos_switch: EosSwitch = EosSwitch.NONE   # workload.ignore_eos on the wire
    cache_switch: bool = False        # takes `cache_prompt: false`, so each trial evaluates its whole prompt

    @property
    def remote(self) -> bool:
        """The server runs elsewhere, at a configured address."""
        return self.start is Start.REMOTE

    @property
    def stable_address(self) -> bool:
        """Its address names the same server in every process (an embedded engine's port is new in each)."""
        return self.remote

    @property
    def openai_api(self) -> bool:
        """Speaks the OpenAI API: options are checked against its fields, the inventory is GET /models."""
        return self.fmt.name == OPENAI.name

    def check_parallel(self, parallel: int | None) -> None:
        """``backend.parallel``: a whole number >= 1, and only for a server this sweep starts (:class:`ConfigError`).

        Why a refusal, not a note, for a running server: the sweep cannot set its slots, so cells
        ``backend.parallel=1,2`` would measure the same server twice under two labels.  Its own
        setting is recorded instead (``server_parallel``, where the server or its environment tells it).
        """
        if parallel is None:
            return
        if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
            raise ConfigError(f"invalid backend.parallel={parallel!r}: a whole number >= 1 (requests the server "
                              "generates at once)")
        if self.remote:
            where = ("set OLLAMA_NUM_PARALLEL=N where `ollama serve` runs" if self.fmt.name == OLLAMA.name else
                     "set it where the server starts (llama-server -np N, vLLM --max-num-seqs N)")
            raise ConfigError(f"backend.parallel={parallel} cannot be set by the sweep on backend={self.name}, "
                              f"whose server is already running: {where}, and drop backend.parallel; the sweep "
                              "records the server's own value in server_parallel where it can read it")

    def check(self, options: Mapping[str, Any], *, system: str | None, endpoint: str,
              keep_alive: str | None) -> None:
        """Refuse, in one line, what this kind cannot carry (:class:`ConfigError`)."""
        if self.openai_api:   # the format module knows what the API can carry
            check_cell(self.name, options, system=system, endpoint=endpoint, keep_alive=keep_alive,
                       load_time_as_flags=self.start is Start.LLAMA_SERVER)


KINDS: dict[str, BackendKind] = {k.name: k for k in (
    BackendKind("embedded", Start.EMBEDDED, OLLAMA, several_instances=True, eos_switch=EosSwitch.OPTION,
                cache_switch=True),
    BackendKind("ollama", Start.REMOTE, OLLAMA, example_url="http://host:11434", several_hosts=True),
    BackendKind("openai", Start.REMOTE, OPENAI, example_url="http://host:8000/v1", eos_switch=EosSwitch.BODY),
    BackendKind("llama_server", Start.LLAMA_SERVER, OPENAI, eos_switch=EosSwitch.BODY, cache_switch=True),
)}

# backend.api → its format.
FORMATS: dict[str, StreamFormat] = {OLLAMA.name: OLLAMA, OPENAI.name: OPENAI}


def _paired(names: set[str], records: set[str], formats: set[str]) -> None:
    """Every ``backend.kind`` choice (a file in conf/backend/) has its record, every record its file,
    every ``backend.api`` choice its format: a mismatch is a programming error, caught at import."""
    if names != records or formats != set(Api):
        raise RuntimeError(f"conf/backend/ files without a record in {__name__}.KINDS: {sorted(names - records)}; "
                           f"records without a conf/backend/<name>.yaml: {sorted(records - names)}; "
                           f"backend.api values without a format: {sorted(set(Api) ^ formats)}")


_paired(set(BackendName), set(KINDS), set(FORMATS))


def kind_named(name: str) -> BackendKind:
    """The record of ``backend.kind``; a :class:`ConfigError` naming the choices otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"invalid backend.kind '{name}': use backend={', backend='.join(KINDS)}") from None


def kind_of(backend: BackendConfig) -> BackendKind:
    """The record of a backend config."""
    return kind_named(backend.kind)


def format_for(backend: BackendConfig) -> StreamFormat:
    """The wire format ``backend.api`` names (the kind's own when the names agree); a :class:`ConfigError` otherwise."""
    kind = kind_of(backend)
    if backend.api == kind.fmt.name:
        return kind.fmt
    try:
        return FORMATS[backend.api]
    except KeyError:
        raise ConfigError(f"backend.api={backend.api} is not a known stream format: choose one of "
                          f"{', '.join(sorted(FORMATS))}") from None
