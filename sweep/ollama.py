"""HTTP clients on httpx: Ollama's inventory calls (sync) and the streamed calls (async).

:class:`OllamaClient` answers the questions asked once before measuring
(version, show, tags, ps).  :class:`StreamClient` opens the streamed calls that
are measured: it only POSTs and hands the open response over; the runner reads
its raw bytes, stamps them and asks a :mod:`sweep.streams` format what they mean,
so the same client serves any wire format.  One ``StreamClient`` per server,
used from one event loop, carries any number of concurrent streams.
Secrets (API key, extra headers) come from the environment and stay in the
client's headers: they are never part of a record, a log line or a report.
"""

from __future__ import annotations


import contextlib
import functools
import json
import os
import ssl
import time
from collections.abc import AsyncIterator
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


def error_text(body: bytes) -> str:
    """An error body's message: ``{"error": "…"}`` (Ollama) or ``{"error": {"message": "…"}}`` (OpenAI), else its start."""
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "error" in obj:
        error = obj["error"]
        return str(error["message"]) if isinstance(error, dict) and "message" in error else str(error)
    return body[:300].decode("utf-8", "replace")


class OllamaClient:
    """Talks to one server.  ``stall_timeout_s`` is the longest silence tolerated."""

    def __init__(self, base_url: str, *, connect_timeout_s: float = 10.0,
                 stall_timeout_s: float = 120.0, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=_timeout(connect_timeout_s, stall_timeout_s),
                                  verify=tls_context(),
                                  headers=headers or {})

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
                              f"is this an Ollama server? ({error_text(response.content)})")
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
            raise ConfigError(f"/api/show for '{model}' failed with HTTP {response.status_code}: {error_text(response.content)}")
        return response.json()

    def tags(self) -> list[dict[str, Any]]:
        return self._http.get("/api/tags").json().get("models", [])

    def ps(self) -> list[dict[str, Any]]:
        return self._http.get("/api/ps").json().get("models", [])


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One certificate store per process: httpx loads it anew for every client (60–300 ms), once per cell."""
    return httpx.create_ssl_context()


def _timeout(connect_timeout_s: float, stall_timeout_s: float) -> httpx.Timeout:
    """``read`` is the longest silence between two byte arrivals: a stall."""
    return httpx.Timeout(connect=connect_timeout_s, read=stall_timeout_s, write=stall_timeout_s,
                         pool=connect_timeout_s)


@dataclass
class StreamStart:
    """An open streamed call: when the request was sent, and the response (status, headers, body to read)."""

    sent_ns: int
    response: httpx.Response


class StreamClient:
    """Streamed POSTs to one server on ``httpx.AsyncClient``; create and use it inside one event loop.

    ``max_streams`` bounds the connection pool: concurrent calls beyond it wait
    for a connection (counted in their TTFT), so keep it ≥ the concurrency you run.
    """

    def __init__(self, base_url: str, *, connect_timeout_s: float = 10.0, stall_timeout_s: float = 120.0,
                 headers: dict[str, str] | None = None, max_streams: int = 256) -> None:
        self.base_url = base_url.rstrip("/")
        limits = httpx.Limits(max_connections=max_streams, max_keepalive_connections=max_streams)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=_timeout(connect_timeout_s, stall_timeout_s),
                                       verify=tls_context(),
                                       headers=headers or {}, limits=limits)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @contextlib.asynccontextmanager
    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[StreamStart]:
        """POST ``body`` to ``path``; the clock starts right before the request is written.

        Transport errors propagate as httpx exceptions for the runner to classify.
        """
        sent_ns = time.perf_counter_ns()
        async with self._http.stream("POST", path, json=body) as response:
            yield StreamStart(sent_ns, response)
