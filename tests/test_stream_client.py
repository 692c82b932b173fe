"""The async client under the runner (:class:`sweep.backends.http.StreamClient`): pool, stale connections, own errors.

The statuses of faults inside a stream are in ``test_runner.py``; these are the
client's own behaviours around them, over real loopback sockets.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sweep.contract import TrialRecord
from sweep.backends.http import Failure, StreamClient, TransportError
from sweep.runner import Target, measure_call
from sweep.backends.ollama import OLLAMA
from tests.cells import make_cell
from sweep.testing.standin import Script, StandIn


def test_waiting_for_a_pooled_connection_beyond_connect_timeout_is_connect_error(standin: StandIn) -> None:
    """One connection (max_streams=1) held by a 1 s stream: the second call gives up after connect_timeout_s."""
    standin.default = Script(tokens=["a"] * 20, token_interval_s=0.05)
    cell = make_cell()

    async def run() -> list[TrialRecord]:
        async with StreamClient(standin.base_url, connect_timeout_s=0.3, max_streams=1) as client:
            target = Target(client, OLLAMA, 30.0)
            return list(await asyncio.gather(*(measure_call(target, cell, f"p{i}", TrialRecord(trial=i))
                                               for i in range(2))))

    records = sorted(asyncio.run(run()), key=lambda r: r.status)
    assert [r.status for r in records] == ["connect_error", "ok"]
    waited, done = records
    assert waited.error.startswith("ConnectTimeout: no connection within 0.3 s") and waited.http_status is None
    assert done.content_chunks == 20
    assert len(standin.requests) == 1   # the one that waited was never sent


class _ClosesAfterEachAnswer:
    """A server that answers one request per connection, keep-alive headers notwithstanding, then closes it.

    As a server does when its idle timeout ends a kept-alive connection, or when it is restarted in place.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:   # closed
                return
            self.connections += 1
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                answer = b'{"models": []}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def closing_server() -> Iterator[_ClosesAfterEachAnswer]:
    server = _ClosesAfterEachAnswer()
    yield server
    server.close()


def test_a_connection_closed_while_the_loop_was_blocked_is_not_reused(closing_server: _ClosesAfterEachAnswer) -> None:
    """The close arrives while the loop is busy (a llama-server restarted in place): the next call reconnects.

    aiohttp would otherwise reuse the dead connection and the POST would fail
    before any answer, a connect_error the server did not cause.
    """

    async def run() -> list[int]:
        statuses = []
        async with StreamClient(closing_server.base_url) as client:
            for _ in range(3):
                async with client.stream("/api/generate", {"model": "m", "prompt": "x"}) as start:
                    statuses.append(start.status)
                    assert await start.body() == b'{"models": []}'
                time.sleep(0.2)   # blocks the loop: the server's close is not seen until it polls again
        return statuses

    assert asyncio.run(run()) == [200, 200, 200]
    assert closing_server.connections == 3


def test_unmeasured_calls_raise_our_error_with_a_kind(standin: StandIn) -> None:
    """get_json / post_json: non-2xx and transport failures are TransportError, never a library's exception."""
    with StandIn() as gone:
        gone_url = gone.base_url

    async def run() -> list[TransportError]:
        failures = []
        async with StreamClient(standin.base_url) as client:
            assert await client.get_json("/api/ps") == {"models": []}
            assert (await client.post_json("/api/generate", {"model": "gemma3:latest", "keep_alive": 0}))["done"]
            try:
                await client.get_json("/api/nothing")
            except TransportError as exc:
                failures.append(exc)
        async with StreamClient(gone_url, connect_timeout_s=1.0) as client:
            try:
                await client.post_json("/api/generate", {"model": "m", "keep_alive": 0})
            except TransportError as exc:
                failures.append(exc)
        return failures

    missing, refused = asyncio.run(run())
    assert missing.kind == Failure.HTTP and str(missing) == "HTTP 404 from GET /api/nothing: not found"
    assert refused.kind == Failure.CONNECT and str(refused).startswith("ConnectError: ")


def test_a_base_url_with_a_path_keeps_it(standin: StandIn) -> None:
    """``…/v1`` + ``/models`` is ``/v1/models`` (an OpenAI-compatible server's base), as with httpx."""

    async def run() -> object:
        async with StreamClient(standin.base_url + "/v1/") as client:
            return await client.get_json("/models")

    assert asyncio.run(run())["data"][0]["id"] == "gemma3:latest"
    assert standin.hits[-1] == "GET /v1/models"
