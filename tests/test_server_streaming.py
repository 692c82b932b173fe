"""Streamed responses: after the first burst the generation's thread writes to the socket itself.

A real uvicorn on 127.0.0.1 (in this process, so a test can block its event loop)
serves one route whose "generation" is a thread putting lines into a real
:class:`Mailbox`, as the engine's worker does; the client is a real httpx client.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from sweep.server.__main__ import bind_socket
from sweep.server.streaming import BurstStream, Mailbox, SocketWriter, expose_transport

pytestmark = pytest.mark.timeout(60)

END = "END"


def _burst(items: list[str]) -> tuple[bytes, bool]:
    out = bytearray()
    for item in items:
        if item == END:
            return bytes(out + b"end\n"), True
        out += item.encode() + b"\n"
    return bytes(out), False


@dataclass
class Generation:
    """What the route's worker thread does and what the test sees of it."""

    lines: int = 5
    go: threading.Event = field(default_factory=threading.Event)   # set by the test: write the rest
    cancel: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None
    clients: list[tuple[str, int]] = field(default_factory=list)

    def work(self, box: Mailbox) -> None:
        box.put("first")
        self.go.wait(10)
        for i in range(self.lines):
            if self.cancel.is_set():
                break
            box.put(f"token {i}")
            time.sleep(0.01)
        box.put(END)


@pytest.fixture(params=["httptools", "h11"])   # uvicorn's two HTTP/1.1 implementations: both expose the transport
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, Generation]]:
    gen = Generation()

    async def route(req: Request) -> BurstStream:
        gen.loop = asyncio.get_running_loop()
        gen.clients.append(req.client)
        gen.cancel = threading.Event()
        box = Mailbox(gen.loop)
        threading.Thread(target=gen.work, args=(box,), daemon=True).start()
        return BurstStream(await box.get(), box, gen.cancel, _burst, "application/x-ndjson")

    app = expose_transport(Starlette(routes=[Route("/stream", route, methods=["POST"])]))
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http=request.param))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", gen
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.slow   # blocks the server's event loop for 2 s by design
def test_tokens_reach_the_client_while_the_event_loop_is_blocked(served: tuple[str, Generation]) -> None:
    base_url, gen = served
    with httpx.Client(base_url=base_url, timeout=10) as client, client.stream("POST", "/stream") as r:
        lines = r.iter_lines()
        assert next(lines) == "first"
        time.sleep(0.5)   # the response hands the stream to the worker right after the first burst
        assert gen.loop is not None
        blocked_until = time.monotonic() + 2.0
        gen.loop.call_soon_threadsafe(time.sleep, 2.0)   # the server's event loop does nothing for 2 s
        time.sleep(0.1)
        gen.go.set()
        arrived = [(next(lines), time.monotonic()) for _ in range(gen.lines)]
        assert [text for text, _ in arrived] == [f"token {i}" for i in range(gen.lines)]
        assert all(t < blocked_until for _, t in arrived), "tokens waited for the event loop"
        assert list(lines) == ["end"]   # the terminating chunk came after the loop was free again


def test_a_worker_written_stream_leaves_the_connection_reusable(served: tuple[str, Generation]) -> None:
    base_url, gen = served
    gen.go.set()
    with httpx.Client(base_url=base_url, timeout=10, limits=httpx.Limits(max_connections=1)) as client:
        bodies = [client.post("/stream").text for _ in range(2)]
    expected = "first\n" + "".join(f"token {i}\n" for i in range(gen.lines)) + "end\n"
    assert bodies == [expected, expected]
    assert gen.clients[0] == gen.clients[1]   # same client port: one keep-alive connection


def test_without_uvicorns_transport_the_stream_goes_through_the_event_loop() -> None:
    gen = Generation()
    gen.go.set()

    async def route(request: Request) -> BurstStream:
        box = Mailbox(asyncio.get_running_loop())
        threading.Thread(target=gen.work, args=(box,), daemon=True).start()
        return BurstStream(await box.get(), box, gen.cancel, _burst, "application/x-ndjson")

    async def call() -> str:
        app = expose_transport(Starlette(routes=[Route("/stream", route, methods=["POST"])]))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process") as c:
            return (await c.post("/stream")).text

    assert asyncio.run(call()) == "first\n" + "".join(f"token {i}\n" for i in range(gen.lines)) + "end\n"
    assert gen.cancel.is_set()


def test_a_client_that_left_cancels_the_generation(served: tuple[str, Generation]) -> None:
    base_url, gen = served
    gen.lines = 10_000
    with httpx.Client(base_url=base_url, timeout=10) as client, client.stream("POST", "/stream") as r:
        assert next(r.iter_lines()) == "first"
        time.sleep(0.3)
    gen.go.set()   # the connection is closed: the worker's writes fail
    deadline = time.monotonic() + 10
    while not gen.cancel.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gen.cancel.is_set()


def test_a_reader_that_stalls_holds_the_writer_until_cancelled() -> None:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    cancel, ended = threading.Event(), threading.Event()
    writer = SocketWriter(ours.fileno(), lambda items: (b"x" * 65536, False), cancel, ended.set)
    thread = threading.Thread(target=lambda: [writer(["t"]) for _ in range(100)], daemon=True)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive()   # the peer reads nothing: the writer waits instead of buffering
    cancel.set()
    thread.join(5.0)
    assert not thread.is_alive() and ended.is_set()
    ours.close()
    peer.close()
