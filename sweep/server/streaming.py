"""How a generation's events reach the client: through the event loop, or straight from the worker thread.

A generation runs in a worker thread (llama.cpp calls block) and hands its
events to the event loop through a :class:`Mailbox`, one wake-up per burst.  A
streamed response takes the first burst through ASGI as usual, then, where it
can, *diverts* the mailbox: the worker encodes every later event and writes it to
the client's socket itself (:class:`SocketWriter`, HTTP chunked framing), and the
loop only waits for the end and sends the terminating chunk through ASGI, so
uvicorn's view of the response (complete, keep-alive) stays right.

Why the worker writes: handing each token to the loop (a wake-up through its
self-pipe, a task step, Starlette's and uvicorn's ``send``, the socket write)
cost ~250 µs of CPU per token on the loop while llama.cpp computes, and the
worker waited for the GIL while the loop did it.  When ``num_thread`` takes every
core, every one of those microseconds is taken from a compute thread (issue 19).
The worker holds the GIL between two decode steps anyway; encoding one token and
one ``write(2)`` there cost a few tens of µs and wake nothing.

Where the connection's transport is unknown (another ASGI server, an in-process
test client) or still has bytes buffered, the response streams through the loop
(:func:`stream_bursts`).
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
from typing import Any, AsyncIterator, Callable, Mapping

from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

TRANSPORT_KEY = "chimera.transport"
"""Where :func:`expose_transport` puts the connection's asyncio transport in the ASGI scope."""

_STALL_POLL_S = 0.5  # a client that stops reading: check the job's cancel flag this often

Burst = Callable[[list[Any]], "tuple[bytes, bool]"]
"""Encodes events that arrived together (NDJSON or SSE) and says whether the stream ends with them."""


class Mailbox:
    """Events from a generation's worker thread to the event loop, one wake-up per burst.

    Why not an ``asyncio.Queue`` fed by ``call_soon_threadsafe`` per event: that
    wakes the loop (a write to its self-pipe, a GIL hand-over) once per token,
    even when the loop is still busy with the previous one.  Here the worker
    appends under a lock and schedules a wake-up only when none is pending; the
    loop takes everything that has arrived in one go.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._wake_pending = False
        self._waiter: asyncio.Future[None] | None = None  # only touched on the loop
        self._diverted: Callable[[list[Any]], None] | None = None

    def put(self, item: Any) -> None:
        """From the worker thread; raises RuntimeError once the loop is closed."""
        with self._lock:
            diverted = self._diverted
            if diverted is None:
                self._items.append(item)
        if diverted is not None:  # outside the lock: it may block on a slow client
            diverted([item])
            return
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def divert(self, to: Callable[[list[Any]], None]) -> None:
        """From the loop: what is pending, then every later event, goes to ``to`` instead of the loop.

        The pending events are handed over under the lock, so the worker's next
        event cannot overtake them.
        """
        with self._lock:
            items, self._items = self._items, []
            if items:
                to(items)
            self._diverted = to

    async def get_many(self) -> list[Any]:
        """Every event that has arrived (at least one: waits for it)."""
        while True:
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    return items
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def get(self) -> Any:
        """One event (the rest of a burst stays for the next call)."""
        items = await self.get_many()
        if len(items) > 1:
            with self._lock:
                self._items[:0] = items[1:]
        return items[0]


async def stream_bursts(first: Any, queue: Mailbox, cancel: threading.Event, burst: Burst) -> AsyncIterator[bytes]:
    """A streamed response body: each batch of engine items that arrived together, encoded by ``burst``.

    Shared by the Ollama (NDJSON) and OpenAI (SSE) routes; ``burst`` says whether the
    stream is finished.  The job is cancelled on the way out: a no-op when it finished,
    it stops the engine when the client left mid-stream.
    """
    items = [first]
    try:
        while True:
            out, finished = burst(items)
            if out:
                yield out  # what arrived together is written together
            if finished:
                return
            items = await queue.get_many()
    finally:
        cancel.set()


def expose_transport(app: ASGIApp) -> ASGIApp:
    """Wrap ``app`` so that HTTP scopes carry uvicorn's transport under :data:`TRANSPORT_KEY`.

    uvicorn calls the app with its ``RequestResponseCycle.send``, a bound method whose
    object holds ``transport``; nothing else in ASGI gives access to the socket.
    Anything else (no such attribute) leaves the scope as it is.
    """

    async def with_transport(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None:
                scope[TRANSPORT_KEY] = transport
        await app(scope, receive, send)

    return with_transport


class SocketWriter:
    """Bursts encoded and written to the client's socket in HTTP chunked framing, by whichever thread calls.

    It writes through its own duplicate of the socket's descriptor and closes it
    when the stream is over: if the client leaves and the event loop closes the
    connection meanwhile, the number cannot be reused for another client's
    connection under a write still to come (the write fails instead).
    Blocking on purpose: a client that stops reading holds the worker (the
    generation pauses, as llama-server's does) rather than growing a buffer.  A
    failed write (the client left) sets ``cancel``.  ``ended`` is called once,
    when the encoder says the stream is finished or the socket failed.
    """

    def __init__(self, sock_fd: int, burst: Burst, cancel: threading.Event, ended: Callable[[], None]) -> None:
        self._fd = os.dup(sock_fd)
        self._burst = burst
        self._cancel = cancel
        self._ended = ended

    def __call__(self, items: list[Any]) -> None:
        if self._fd < 0:
            return  # over: e.g. the worker's end marker after the final result
        out, finished = self._burst(items)
        if out and not self._write(b"%x\r\n%s\r\n" % (len(out), out)):
            finished = True
        if finished:
            os.close(self._fd)
            self._fd = -1
            self._ended()

    def _write(self, data: bytes) -> bool:
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(self._fd, view):]
                except BlockingIOError:
                    if self._cancel.is_set():
                        return False
                    select.select([], [self._fd], [], _STALL_POLL_S)
        except OSError:  # the client left: stop generating for it
            self._cancel.set()
            return False
        return True


class BurstStream(StreamingResponse):
    """A streamed generation: bursts through the loop until the first is out, then from the worker."""

    def __init__(self, first: Any, box: Mailbox, cancel: threading.Event, burst: Burst, media_type: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(stream_bursts(first, box, cancel, burst), media_type=media_type, headers=headers)
        self._first = first
        self._box = box
        self._cancel = cancel
        self._burst = burst

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get(TRANSPORT_KEY)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            await super().__call__(scope, receive, send)
            return
        await self.body_iterator.aclose()  # not used: never started, so this only discards it
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            out, finished = self._burst([self._first])
            await send({"type": "http.response.body", "body": out, "more_body": True})
            while not finished:
                if transport.get_write_buffer_size() == 0 and not transport.is_closing():
                    await self._from_worker(sock.fileno())
                    break
                out, finished = self._burst(await self._box.get_many())
                await send({"type": "http.response.body", "body": out, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._cancel.set()  # a no-op when it finished; stops the engine when we leave early

    async def _from_worker(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        over = asyncio.Event()
        done = threading.Event()

        def ended() -> None:  # in the worker thread, or in this one while diverting
            done.set()
            try:
                loop.call_soon_threadsafe(over.set)
            except RuntimeError:  # loop closed (shutdown)
                pass

        self._box.divert(SocketWriter(fd, self._burst, self._cancel, ended))
        if not done.is_set():
            await over.wait()
