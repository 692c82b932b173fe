"""The HTTP client of the measured streamed calls (async, aiohttp), for any wire format.

:class:`StreamClient` opens the streamed calls that
are measured: it only POSTs and hands the open response over; the runner reads
its raw bytes, stamps them and asks a :mod:`sweep.backends.stream` format what they mean,
so the same client serves any wire format.  One ``StreamClient`` per server,
used from one event loop, carries any number of concurrent streams.
Why aiohttp for the streams: its C HTTP parser and protocol-based reader cost
about half of httpx's client CPU per streamed token (~200 vs ~350 µs measured at
num_thread = all cores, where every µs of ours is taken from a compute thread).
Its failures leave this module only as :class:`TransportError`, so no other
module depends on the HTTP library.
Secrets (API key, extra headers) come from the environment and stay in the
client's headers: they are never part of a record, a log line or a report.
"""

from __future__ import annotations


import asyncio
import contextlib
import functools
import json
import os
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import Any

import aiohttp


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


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One certificate store per process: httpx loads it anew for every client (60–300 ms), once per cell."""
    import httpx  # lazily: httpx (with its CLI's rich/click/pygments) costs ~0.3 s to import

    return httpx.create_ssl_context()


class Failure(StrEnum):
    """What went wrong below HTTP, for the runner's status (and the unmeasured calls' callers)."""

    STALL = "stall"        # no byte for stall_timeout_s, also while waiting for the response head
    CONNECT = "connect"    # no connection (refused, timed out, no pooled one in time) or closed before any answer
    BROKEN = "broken"      # the response started and then broke: cut body, reset, malformed HTTP
    HTTP = "http"          # an unmeasured call answered non-2xx (a measured call hands its status over instead)


class TransportError(Exception):
    """A call that did not get through, as a one-line message; ``kind`` says which way (:class:`Failure`).

    The message leads with the name httpx gave the same failure (``ReadTimeout``,
    ``ConnectError``, ``ConnectTimeout``, ``ReadError``, ``RemoteProtocolError``):
    stored rows from before the switch to aiohttp say the same thing the same way.
    """

    def __init__(self, kind: Failure, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# What aiohttp raises for a failed call.  OSError too: aiohttp wraps socket errors, but a raw one is still one.
_FAILURES = (aiohttp.ClientError, OSError)


def _one_line(exc: BaseException) -> str:
    """aiohttp's own words for a failure, on one line (its parser errors span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _named(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_one_line(exc)}"


class _Timeouts:
    """The client's limits, for failure messages that name the setting to change."""

    def __init__(self, connect_s: float, stall_s: float) -> None:
        self.connect_s, self.stall_s = connect_s, stall_s

    def failure(self, exc: BaseException, *, responded: bool) -> TransportError:
        """Map an aiohttp failure; ``responded``: the response head had arrived."""
        if isinstance(exc, aiohttp.SocketTimeoutError):   # sock_read: the longest silence, head included
            waited = "bytes" if responded else "response head"
            return TransportError(Failure.STALL, f"ReadTimeout: no {waited} for {self.stall_s:g} s "
                                                 "(backend.stall_timeout_s)")
        if isinstance(exc, aiohttp.ConnectionTimeoutError):   # connecting, or waiting for a pooled connection
            return TransportError(Failure.CONNECT, f"ConnectTimeout: no connection within {self.connect_s:g} s "
                                                   "(backend.connect_timeout_s)")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return TransportError(Failure.CONNECT, f"ConnectError: {_one_line(exc)}")
        if not responded:   # connected, then closed, reset or garbled before a response head
            return TransportError(Failure.CONNECT, f"ConnectError: no response from the server ({_named(exc)})")
        if isinstance(exc, OSError):   # reset mid-body (aiohttp's ClientOSError is one)
            return TransportError(Failure.BROKEN, f"ReadError: the connection broke mid-response ({_named(exc)})")
        return TransportError(Failure.BROKEN, f"RemoteProtocolError: the response broke off ({_named(exc)})")


class _Chunks:
    """Each network read as it arrives (aiohttp's ``content.iter_any()``), failures mapped to :class:`TransportError`.

    A class rather than an async generator: one await per chunk, as in aiohttp's own iterator.
    """

    __slots__ = ("_read", "_timeouts")

    def __init__(self, read: Callable[[], Awaitable[bytes]], timeouts: _Timeouts) -> None:
        self._read, self._timeouts = read, timeouts

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._read()
        except _FAILURES as exc:
            raise self._timeouts.failure(exc, responded=True) from exc
        if not chunk:   # end of the body
            raise StopAsyncIteration
        return chunk


class StreamStart:
    """An open streamed call: when the request was sent, the HTTP status, and its body to read.

    Read it one way: :meth:`body` (an error response, whole) or :meth:`chunks`
    (a stream, each read as it arrives).  Leaving :meth:`StreamClient.stream`
    releases the response; a body not read to its end closes the connection, so
    a server streaming to a reader that stopped early sees the disconnect.
    """

    __slots__ = ("sent_ns", "status", "_response", "_timeouts")

    def __init__(self, sent_ns: int, response: aiohttp.ClientResponse, timeouts: _Timeouts) -> None:
        self.sent_ns = sent_ns
        self.status: int = response.status
        self._response, self._timeouts = response, timeouts

    async def body(self) -> bytes:
        """The whole body."""
        try:
            return await self._response.read()
        except _FAILURES as exc:
            raise self._timeouts.failure(exc, responded=True) from exc

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as the network delivers them, one item per read."""
        return _Chunks(self._response.content.readany, self._timeouts)


def env_proxy(base_url: str) -> str | None:
    """The proxy the environment names for ``base_url`` (``HTTP(S)_PROXY``, ``NO_PROXY``), as httpx honours it.

    Looked up once per client: aiohttp's own ``trust_env`` looks it up in a thread for every request.
    """
    url = urllib.parse.urlsplit(base_url)
    if urllib.request.proxy_bypass(url.netloc):
        return None
    return urllib.request.getproxies().get(url.scheme)


async def _see_closed_connections() -> None:
    """Let the event loop poll its sockets before a pooled connection is picked.

    Why: aiohttp reuses a kept-alive connection unless the loop has already seen
    it closed, and a POST on a connection the server closed while the loop was
    blocked (a llama-server restarted in place, a server's idle timeout during a
    long synchronous step) fails before any answer: a false connect_error.
    httpx checked the socket itself before reusing it.  Two yields: the loop
    polls during the first and may queue the close behind us; the second lets it
    run (tests/test_stream_client.py fails without them).  Before the request
    stamp, so not in any measured time.
    """
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class StreamClient:
    """Streamed POSTs to one server on one ``aiohttp.ClientSession``; create and use it inside one event loop.

    ``max_streams`` bounds the connection pool: concurrent calls beyond it wait
    for a connection (counted in their TTFT, and bounded by ``connect_timeout_s``),
    so keep it ≥ the concurrency you run.  ``stall_timeout_s`` is the longest
    silence tolerated between two byte arrivals, the wait for the response head
    included; there is no overall limit here (the runner has its own deadline).
    Failures are raised as :class:`TransportError`.
    """

    def __init__(self, base_url: str, *, connect_timeout_s: float = 10.0, stall_timeout_s: float = 120.0,
                 headers: dict[str, str] | None = None, max_streams: int = 256) -> None:
        self.base_url = base_url.rstrip("/")   # joined by hand: a base with a path (…/v1) keeps it
        self._timeouts = _Timeouts(connect_timeout_s, stall_timeout_s)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("create StreamClient inside the event loop that uses it") from None
        self._proxy = env_proxy(self.base_url)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_streams, ssl=tls_context()),
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=stall_timeout_s),
            headers=headers or {})   # trust_env stays off: it costs two thread hops per request, inside the TTFT

    async def aclose(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get_json(self, path: str) -> Any:
        """A small unmeasured GET (``/api/ps``) between measured calls; :class:`TransportError` if it fails."""
        return await self._json("GET", path, None)

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """A small unmeasured POST (an unload: ``keep_alive: 0``); None for an empty answer."""
        return await self._json("POST", path, body)

    async def _json(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """The parsed JSON answer (ValueError if it is not JSON); non-2xx and transport failures raise."""
        responded = False
        await _see_closed_connections()
        try:
            async with self._session.request(method, self.base_url + path, json=body, proxy=self._proxy) as response:
                responded = True
                data = await response.read()
        except _FAILURES as exc:
            raise self._timeouts.failure(exc, responded=responded) from exc
        if not 200 <= response.status < 300:
            raise TransportError(Failure.HTTP, f"HTTP {response.status} from {method} {path}: {error_text(data)}")
        return json.loads(data) if data else None

    @contextlib.asynccontextmanager
    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[StreamStart]:
        """POST ``body`` to ``path``; the clock starts right before the request is written.

        Yields once the response head has arrived; failures up to then (and while
        reading, from :class:`StreamStart`) raise :class:`TransportError`.
        """
        await _see_closed_connections()
        sent_ns = time.perf_counter_ns()
        try:
            response = await self._session.post(self.base_url + path, json=body, proxy=self._proxy)
        except _FAILURES as exc:
            raise self._timeouts.failure(exc, responded=False) from exc
        async with response:   # released on the way out, also on an early stop
            yield StreamStart(sent_ns, response, self._timeouts)
