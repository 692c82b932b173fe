"""A loopback NDJSON server that is never the bottleneck, and knows exactly when it sent each chunk.

Run as its own process (``python -m benchmarks.loopback MODE ...``) so it never
shares a core or the GIL with the runner being measured.  It prints its port
on the first stdout line, then one JSON line per finished request with the
truth: when the request arrived and when each chunk left (``perf_counter_ns``,
which is CLOCK_MONOTONIC and so comparable across processes on Linux).

Modes:

``firehose N``
    The whole streamed answer (N content chunks and a final chunk) is built
    once at start-up and written to the socket in one call per request: the
    client can read as fast as it parses.
``paced N RATE FIRST_S [--spin]``
    N chunks at RATE per second after FIRST_S seconds, each written on its own
    (TCP_NODELAY).  ``--spin`` waits the last 300 µs of each gap in a busy loop
    (one stream, exact gaps); without it, many streams share the event loop.
    Actual send times are recorded, so the truth is what happened, not the
    schedule.

The request body's ``prompt`` is echoed as the request id in the truth line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time

HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: keep-alive\r\n\r\n")
LINE = b'{"model":"bench","created_at":"2026-01-01T00:00:00Z","response":" tok","done":false}\n'


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def final_line(n: int, eval_ns: int) -> bytes:
    return (b'{"model":"bench","created_at":"2026-01-01T00:00:00Z","response":"","done":true,'
            b'"done_reason":"length","total_duration":%d,"load_duration":0,"prompt_eval_count":1,'
            b'"prompt_eval_duration":1,"eval_count":%d,"eval_duration":%d}\n' % (eval_ns, n, max(1, eval_ns)))


async def _read_request(reader: asyncio.StreamReader) -> dict | None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b"{}"
    try:
        return json.loads(body)
    except ValueError:
        return None


def _spin_until(target_ns: int) -> None:
    remaining = target_ns - time.perf_counter_ns()
    if remaining > 300_000:
        time.sleep((remaining - 300_000) / 1e9)
    while time.perf_counter_ns() < target_ns:
        pass


class Server:
    """The two modes behind one asyncio server; truth lines go to stdout."""

    def __init__(self, mode: str, n: int, rate: float = 0.0, first_s: float = 0.0, spin: bool = False) -> None:
        self.mode, self.n, self.rate, self.first_s, self.spin = mode, n, rate, first_s, spin
        if mode == "firehose":
            body = chunk(LINE * 1) * n + chunk(final_line(n, n * 1000)) + b"0\r\n\r\n"
            self.canned = HEAD + body

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    body = await _read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                recv_ns = time.perf_counter_ns()
                rid = (body or {}).get("prompt", "")
                if self.mode == "firehose":
                    writer.write(self.canned)
                    await writer.drain()
                    print(json.dumps({"id": rid, "recv_ns": recv_ns}), flush=True)
                    continue
                sends = await self._paced(writer, recv_ns)
                print(json.dumps({"id": rid, "recv_ns": recv_ns, "send_ns": sends}), flush=True)
        finally:
            writer.close()

    async def _paced(self, writer: asyncio.StreamWriter, recv_ns: int) -> list[int]:
        writer.write(HEAD)
        gap_ns = int(1e9 / self.rate)
        due = recv_ns + int(self.first_s * 1e9)
        sends = []
        piece = chunk(LINE)
        for _ in range(self.n):
            wait = due - time.perf_counter_ns()
            if self.spin:
                _spin_until(due)
            elif wait > 0:
                await asyncio.sleep(wait / 1e9)
            writer.write(piece)           # the transport writes to the socket at once when it can
            sends.append(time.perf_counter_ns())
            due += gap_ns
            if writer.transport.get_write_buffer_size():
                await writer.drain()
        writer.write(chunk(final_line(self.n, sends[-1] - sends[0])) + b"0\r\n\r\n")
        await writer.drain()
        return sends


async def serve(server: Server) -> None:
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, backlog=256)
    print(srv.sockets[0].getsockname()[1], flush=True)
    async with srv:
        await srv.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("firehose", "paced"))
    ap.add_argument("n", type=int)
    ap.add_argument("rate", type=float, nargs="?", default=0.0)
    ap.add_argument("first_s", type=float, nargs="?", default=0.0)
    ap.add_argument("--spin", action="store_true")
    a = ap.parse_args()
    try:
        asyncio.run(serve(Server(a.mode, a.n, a.rate, a.first_s, a.spin)))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
