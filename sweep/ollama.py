"""A small Ollama HTTP client on httpx: inventory calls and a raw NDJSON stream.

The stream is handed over line by line as bytes arrive, each line stamped with
``perf_counter_ns`` at arrival; what a line *means* is decided by the runner.
Secrets (API key, extra headers) come from the environment and stay in the
client's headers: they are never part of a record, a log line or a report.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from sweep.plan import ConfigError


def headers_from_env(api_key_env: str, headers_env: str) -> dict[str, str]:
    """Authorization and extra headers for a remote Ollama behind a proxy."""
    headers: dict[str, str] = {}
    extra = os.environ.get(headers_env, "") if headers_env else ""
    for item in extra.split(";"):
        if ":" in item:
            name, value = item.split(":", 1)
            headers[name.strip()] = value.strip()
    key = os.environ.get(api_key_env) if api_key_env else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def error_text(response: httpx.Response) -> str:
    """Ollama's ``{"error": ...}`` body, or the start of whatever came back."""
    try:
        body = response.json()
        if isinstance(body, dict) and "error" in body:
            return str(body["error"])
    except ValueError:
        pass
    return response.text[:300]


@dataclass
class StreamStart:
    """An open stream: when the request was sent, the HTTP status, and the lines."""

    sent_ns: int
    status_code: int
    lines: Iterator[tuple[int, str]]  # (arrival perf_counter_ns, line)
    response: httpx.Response


class OllamaClient:
    """Talks to one server.  ``stall_timeout_s`` is the longest silence tolerated."""

    def __init__(self, base_url: str, *, connect_timeout_s: float = 10.0,
                 stall_timeout_s: float = 120.0, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        timeout = httpx.Timeout(connect=connect_timeout_s, read=stall_timeout_s,
                                write=stall_timeout_s, pool=connect_timeout_s)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers or {})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ inventory
    def version(self) -> str:
        """The server's version; a clear :class:`ConfigError` if it cannot be reached."""
        try:
            response = self._http.get("/api/version")
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"cannot reach the server at {self.base_url} ({type(exc).__name__}): "
                "start it ('ollama serve') or set OLLAMA_HOST / backend.base_url"
            ) from None
        if response.status_code != 200:
            raise ConfigError(f"{self.base_url}/api/version answered HTTP {response.status_code}: "
                              f"is this an Ollama server? ({error_text(response)})")
        return str(response.json().get("version", "unknown"))

    def show(self, model: str, *, missing_hint: str | None = None) -> dict[str, Any]:
        """``/api/show`` for a model; a clear :class:`ConfigError` if it is missing."""
        try:
            response = self._http.post("/api/show", json={"model": model})
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach the server at {self.base_url} ({type(exc).__name__})") from None
        if response.status_code == 404:
            hint = missing_hint or f"run 'ollama pull {model}'"
            raise ConfigError(f"model '{model}' is not on {self.base_url}: {hint}")
        if response.status_code != 200:
            raise ConfigError(f"/api/show for '{model}' failed with HTTP {response.status_code}: {error_text(response)}")
        return response.json()

    def tags(self) -> list[dict[str, Any]]:
        return self._http.get("/api/tags").json().get("models", [])

    def ps(self) -> list[dict[str, Any]]:
        return self._http.get("/api/ps").json().get("models", [])

    # ------------------------------------------------------------ streaming
    @contextlib.contextmanager
    def stream(self, endpoint: str, body: dict[str, Any]) -> Iterator[StreamStart]:
        """POST to ``/api/<endpoint>`` and hand over NDJSON lines as they arrive.

        The clock starts right before the request is written; each line is
        stamped when ``iter_lines`` yields it.  Transport errors propagate as
        httpx exceptions for the runner to classify.
        """
        sent_ns = time.perf_counter_ns()
        with self._http.stream("POST", f"/api/{endpoint}", json=body) as response:
            yield StreamStart(sent_ns, response.status_code, _stamped(response), response)


def _stamped(response: httpx.Response) -> Iterator[tuple[int, str]]:
    for line in response.iter_lines():
        yield time.perf_counter_ns(), line
