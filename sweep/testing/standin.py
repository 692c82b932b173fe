"""A scripted, fault-injecting Ollama stand-in on 127.0.0.1.

It speaks Ollama's wire format (NDJSON over chunked HTTP/1.1, nanosecond
timing fields, one final ``done: true`` chunk) with timings and faults chosen
by the test, so the runner's maths and error handling are checked against
known values over a real socket.  Each generate/chat request takes the next
queued :class:`Script` (or the default one) and the request body is recorded.

It also speaks the OpenAI API under ``/v1`` (``GET /v1/models``, streamed
``POST /v1/chat/completions`` and ``/v1/completions`` as SSE ``data:`` lines, a
finish chunk, a usage-only chunk with llama.cpp ``timings``, ``data: [DONE]``),
with the same scripts and faults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from sweep.contract import OPTIONS


FAULTS = ("none", "http_500", "http_404", "kill_mid_stream", "stall", "garbage_line",
          "no_final_chunk", "error_line", "slow_first_byte", "refuse")


@dataclass
class Script:
    """How the stand-in answers one streamed request."""

    tokens: list[str] = field(default_factory=lambda: ["Hello", " world", ",", " this", " is", " a", " test", "."])
    first_token_delay_s: float = 0.05   # request received → first content chunk
    token_interval_s: float = 0.01      # between content chunks
    fault: str = "none"
    fault_after: int = 3                # content chunks sent before the fault strikes
    stall_s: float = 5.0                # how long a `stall` / `slow_first_byte` stays silent
    # the server timings reported in the final chunk (nanoseconds)
    load_duration: int = 1_500_000
    prompt_eval_count: int = 12
    prompt_eval_duration: int = 40_000_000
    eval_duration: int = 400_000_000
    eval_count: int | None = None       # default: len(tokens)
    total_duration: int | None = None   # default: the stand-in's own time from request to final chunk
    done_reason: str = "stop"
    # OpenAI SSE only: send the usage chunk (with llama.cpp timings), or put finish_reason on the last token
    usage_chunk: bool = True
    llama_timings: bool = True
    finish_on_last_token: bool = False
    # lines with empty text sent at once, before the first token (Ollama sends such lines, e.g. while a
    # template's prefix is held back): a client that stamps them as the first token gets TTFT too early
    empty_lines: int = 0


#: On top of the stand-in's own stamps, what a client's figure may add: connecting, sending the request
#: and reading a chunk, on a loaded 2-core machine (a thread can wait tens of ms for a core or the GIL).
DELIVERY_SLACK_MS = 150.0


@dataclass
class Sent:
    """When one streamed answer started (request body read) and when each content chunk was flushed."""

    started_ns: int
    request: dict[str, Any] = field(default_factory=dict)
    content_ns: list[int] = field(default_factory=list)

    @property
    def ttft_ms(self) -> float:
        """The stand-in's own time to first content chunk: a lower bound of any client's TTFT."""
        return (self.content_ns[0] - self.started_ns) / 1e6

    @property
    def itl_ms_mean(self) -> float:
        return (self.content_ns[-1] - self.content_ns[0]) / 1e6 / (len(self.content_ns) - 1)

    @property
    def itl_ms_p50(self) -> float:
        gaps = [(b - a) / 1e6 for a, b in zip(self.content_ns, self.content_ns[1:])]
        return float(statistics.median(gaps))

    @property
    def last_ms(self) -> float:
        """Start to the last content chunk: a lower bound of any client's e2e."""
        return (self.content_ns[-1] - self.started_ns) / 1e6

    def check(self, record: Any) -> None:
        """A client's TTFT, ITL mean, client tok/s and e2e agree with when the chunks actually left.

        Lower bounds are causal (the client started before the stand-in, each chunk arrives after it
        left) and cannot flake; upper bounds allow :data:`DELIVERY_SLACK_MS` per stamp.  Nothing is
        compared with the script's nominal delays, which a loaded machine overshoots.
        """
        from pytest import approx as pytest_approx  # a test's check: pytest is there when it runs
        assert self.ttft_ms <= record.ttft_ms <= self.ttft_ms + DELIVERY_SLACK_MS, (record.ttft_ms, self)
        gaps = len(self.content_ns) - 1
        assert record.itl_ms_mean == pytest_approx(self.itl_ms_mean, abs=DELIVERY_SLACK_MS / gaps), \
            (record.itl_ms_mean, self.itl_ms_mean)
        assert record.client_tok_s == pytest_approx(1000.0 / record.itl_ms_mean, rel=1e-6)
        assert record.e2e_ms >= self.last_ms and record.e2e_ms >= record.ttft_ms


class FifoSlots:
    """``n`` generations at once; a request that waits for one gets it before any request that came later.

    Why not :class:`threading.Semaphore`: a slot released to a woken waiter can be taken by a
    request that arrives before the waiter runs, and the waiter queues again at the back.  On a
    loaded machine some requests then waited seconds while later ones went through, which no
    real server's queue does.  The load tests' capacity, queue and closed-loop figures rest on
    this queue, so a released slot is handed straight to the longest waiter.
    """

    def __init__(self, n: int) -> None:
        self._free = n
        self._lock = threading.Lock()
        self._waiting: deque[threading.Event] = deque()

    def __enter__(self) -> FifoSlots:
        with self._lock:
            if self._free > 0:      # free slots mean nobody waits
                self._free -= 1
                return self
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()   # the slot passes to the longest waiter, never back to the pool
            else:
                self._free += 1


class _QuietServer(ThreadingHTTPServer):
    """Client disconnects are part of the faults we script: no tracebacks for them."""

    request_queue_size = 256   # many concurrent streams connect at once (the default backlog of 5 refuses them)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class StandIn:
    """A live stand-in server; use as a context manager or call :meth:`close`."""

    def __init__(self, models: tuple[str, ...] = ("gemma3:latest", "llama3.1:8b-instruct-q4_0"),
                 version: str = "0.12.3", *, serialize: bool = False, port: int = 0, slots: int = 0) -> None:
        """``serialize``: one generation at a time, later requests wait their turn (one GPU, no
        parallel slots), so concurrent agents on this host gain nothing.  ``port``: reuse an
        address (a host that comes back after dying).  ``slots``: a paced server with that many
        generations at once, later requests queue for a free slot; with a script of known service
        time (first-token delay + token intervals) its capacity is slots / service time, which
        load tests check their knee against."""
        self.models = list(models)
        self.serialize = serialize
        self.engine = FifoSlots(1)  # held while a generation streams, when serialize is set
        self.slots = FifoSlots(slots) if slots > 0 else None   # a slot held per generation
        self.version = version
        self.default = Script()
        self.scripts: deque[Script] = deque()
        # optional: the script for a request's body (e.g. speed depending on options) when none is queued
        self.script_for: Callable[[dict[str, Any]], Script] | None = None
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.hits: list[str] = []      # every request of any kind, "METHOD /path" (dry runs must send none)
        # Model residency as GET /api/ps reports it: a request loads its model with its load-time options,
        # keep_alive 0 unloads it.  Scripted: the size, the share in VRAM (0.0 = a server that ignores num_gpu),
        # the context length (None: the num_ctx asked, else 4096), and the load_duration a (re)load reports
        # (None: the script's, as before).
        self.loaded: dict[str, dict[str, Any]] = {}
        self.ps_size = 500_000_000
        self.vram_fraction = 1.0
        self.context_length: int | None = None
        self.reload_load_duration: int | None = None
        self.resident_before: list[list[str]] = []   # per streamed request: the models loaded when it arrived
        # per streamed request, on the client's clock (perf_counter_ns, one clock per machine): when the
        # stand-in started answering, and when each content chunk left it.  Tests check measured timings
        # against these stamps, not against the script, which a loaded machine does not keep.
        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        # poll_interval: how long close() waits for the serving loop to notice; the default 0.5 s
        # cost every test half a second in teardown
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def queue(self, *scripts: Script) -> None:
        with self._lock:
            self.scripts.extend(scripts)

    def next_script(self, body: dict[str, Any] | None = None) -> Script:
        with self._lock:
            if self.scripts:
                return self.scripts.popleft()
            return self.script_for(body or {}) if self.script_for else self.default

    def record(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)

    def stamp(self, request: dict[str, Any]) -> Sent:
        """A new :class:`Sent` record for the stream that answers ``request``, starting now."""
        sent = Sent(time.perf_counter_ns(), request)
        with self._lock:
            self.sent.append(sent)
        return sent

    def load(self, model: str, options: dict[str, Any]) -> bool:
        """Make ``model`` resident with these load-time options; True when that meant a (re)load."""
        wanted = {o.name: options.get(o.name) for o in OPTIONS if o.load_time}
        with self._lock:
            if self.loaded.get(model) == wanted:
                return False
            self.loaded = {model: wanted}     # one model at a time, as a small GPU would
            return True

    def ps(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"name": m, "model": m, "size": self.ps_size, "size_vram": int(self.ps_size * self.vram_fraction),
                     "context_length": self.context_length or opts.get("num_ctx") or 4096}
                    for m, opts in self.loaded.items()]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def _handler_for(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Nagle off, as in Ollama (Go sets TCP_NODELAY on every connection): with it on, a body written after
        # its head waited for the client's delayed ACK, +40 ms on every request after the first on a kept-alive
        # connection (the cells benchmark counted it as our overhead once the client reused connections)
        disable_nagle_algorithm = True
        request_body: dict[str, Any] = {}   # the streamed request being answered (set in do_POST)

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        # ------------------------------------------------------------ helpers
        def _json(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _line(self, obj: Any) -> None:
            self._chunk(json.dumps(obj).encode() + b"\n")

        def _body(self) -> dict[str, Any] | None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                self._json(400, {"error": "invalid JSON"})
                return None
            return body if isinstance(body, dict) else None

        def _kill(self) -> None:
            """Drop the connection without a proper end (RST)."""
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            self.close_connection = True

        # ------------------------------------------------------------ routes
        def do_GET(self) -> None:
            standin.hits.append(f"GET {self.path}")
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in standin.models]})
            elif self.path == "/api/version":
                self._json(200, {"version": standin.version})
            elif self.path == "/api/tags":
                self._json(200, {"models": [{"name": m, "model": m, "size": 1, "digest": "0" * 64,
                                             "details": {"family": "standin"}} for m in standin.models]})
            elif self.path == "/api/ps":
                self._json(200, {"models": standin.ps()})
            elif self.path == "/":
                data = b"Ollama is running"
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            standin.hits.append(f"POST {self.path}")
            body = self._body()
            if body is None:
                return
            if self.path == "/api/show":
                name = body.get("model") or body.get("name")
                if name not in standin.models:
                    self._json(404, {"error": f"model '{name}' not found"})
                else:
                    self._json(200, {"details": {"family": "standin", "parameter_size": "1B",
                                                 "quantization_level": "Q4_K_M"}, "model_info": {}})
                return
            openai = self.path in ("/v1/chat/completions", "/v1/completions")
            if self.path not in ("/api/generate", "/api/chat") and not openai:
                self._json(404, {"error": "not found"})
                return
            if "prompt" not in body and "messages" not in body:        # load or unload only, as in Ollama
                unload = str(body.get("keep_alive")) in ("0", "0s")
                if unload:
                    standin.loaded.pop(body.get("model"), None)
                else:
                    standin.load(body.get("model"), body.get("options") or {})
                self._json(200, {"model": body.get("model"), "created_at": _now(), "response": "", "done": True,
                                 "done_reason": "unload" if unload else "load"})
                return
            standin.record(body, dict(self.headers))
            self.request_body = body
            standin.resident_before.append(list(standin.loaded))
            script = standin.next_script(body)
            if body.get("model") not in standin.models or script.fault == "http_404":
                message = f"model '{body.get('model')}' not found"
                self._json(404, {"error": {"message": message, "type": "not_found"}} if openai else {"error": message})
                return
            if script.fault == "refuse":
                self._kill()
                return
            if script.fault == "http_500":
                message = "llama runner process has terminated: exit status 2"
                self._json(500, {"error": {"message": message, "type": "server_error"}} if openai else {"error": message})
                return
            if standin.load(body["model"], body.get("options") or {}) and standin.reload_load_duration is not None:
                script = dataclasses.replace(script, load_duration=standin.reload_load_duration)
            with standin.engine if standin.serialize else standin.slots or contextlib.nullcontext():
                if openai:
                    self._sse_stream(script, chat=self.path == "/v1/chat/completions", model=body["model"])
                else:
                    self._stream(script, chat=self.path == "/api/chat", model=body["model"])

            if str(body.get("keep_alive")) in ("0", "0s"):
                standin.loaded.pop(body["model"], None)
        def _sse(self, obj: Any) -> None:
            self._chunk(b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n")

        def _sse_stream(self, script: Script, *, chat: bool, model: str) -> None:
            """OpenAI streaming: role chunk, one chunk per token, finish chunk, usage chunk, [DONE]."""
            started = time.perf_counter()
            sent = standin.stamp(self.request_body)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            head = {"id": "chatcmpl-standin", "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": int(time.time()), "model": model}

            def choice(text: str | None, finish: str | None) -> dict[str, Any]:
                if chat:
                    return {"index": 0, "delta": {} if text is None else {"content": text}, "finish_reason": finish}
                return {"index": 0, "text": text or "", "finish_reason": finish}

            if chat:
                self._sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
            self._chunk(b": keep-alive comment\n\n")
            for _ in range(script.empty_lines):
                self._sse({**head, "choices": [choice("", None)]})
            deadline = started + script.first_token_delay_s
            last = len(script.tokens) - 1
            for i, token in enumerate(script.tokens):
                if i == script.fault_after and script.fault != "none":
                    if script.fault == "error_line":
                        self._sse({"error": {"message": "the model crashed: out of memory", "type": "server_error"}})
                        self._chunk(b"")
                        return
                    if script.fault == "garbage_line":
                        self._sse(b"{not json")
                        self._chunk(b"")
                        return
                    if self._fault(script, model):
                        return
                time.sleep(max(0.0, deadline - time.perf_counter()))
                finish = script.done_reason if script.finish_on_last_token and i == last else None
                self._sse({**head, "choices": [choice(token, finish)]})
                sent.content_ns.append(time.perf_counter_ns())
                deadline += script.token_interval_s
            if not script.finish_on_last_token:
                self._sse({**head, "choices": [choice(None, script.done_reason)]})
            if script.usage_chunk:
                n = len(script.tokens) if script.eval_count is None else script.eval_count
                usage = {**head, "choices": [], "usage": {"prompt_tokens": script.prompt_eval_count,
                                                          "completion_tokens": n,
                                                          "total_tokens": script.prompt_eval_count + n}}
                if script.llama_timings:
                    usage["timings"] = {"prompt_n": script.prompt_eval_count,
                                        "prompt_ms": script.prompt_eval_duration / 1e6,
                                        "predicted_n": n, "predicted_ms": script.eval_duration / 1e6}
                self._sse(usage)
            if script.fault != "no_final_chunk":
                self._sse(b"[DONE]")
            self._chunk(b"")

        def _stream(self, script: Script, *, chat: bool, model: str) -> None:
            started = time.perf_counter()
            sent = standin.stamp(self.request_body)
            if script.fault == "slow_first_byte":
                time.sleep(script.stall_s)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()

            def piece(text: str) -> dict[str, Any]:
                return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}

            for _ in range(script.empty_lines):
                self._line({"model": model, "created_at": _now(), **piece(""), "done": False})
            deadline = started + script.first_token_delay_s
            for i, token in enumerate(script.tokens):
                if i == script.fault_after and script.fault != "none":
                    if self._fault(script, model):
                        return
                time.sleep(max(0.0, deadline - time.perf_counter()))
                self._line({"model": model, "created_at": _now(), **piece(token), "done": False})
                sent.content_ns.append(time.perf_counter_ns())
                deadline += script.token_interval_s
            if script.fault == "no_final_chunk":
                self._chunk(b"")
                return
            final = {"model": model, "created_at": _now(), "done": True, "done_reason": script.done_reason,
                     "total_duration": (int((time.perf_counter() - started) * 1e9) if script.total_duration is None
                                        else script.total_duration),
                     "load_duration": script.load_duration,
                     "prompt_eval_count": script.prompt_eval_count,
                     "prompt_eval_duration": script.prompt_eval_duration,
                     "eval_count": len(script.tokens) if script.eval_count is None else script.eval_count,
                     "eval_duration": script.eval_duration}
            final.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
            self._line(final)
            self._chunk(b"")

        def _fault(self, script: Script, model: str) -> bool:
            """Inject the scripted fault mid-stream; True if the stream is over."""
            if script.fault == "kill_mid_stream":
                self._kill()
                return True
            if script.fault == "stall":
                time.sleep(script.stall_s)
                self._kill()
                return True
            if script.fault == "garbage_line":
                self._chunk(b"\x00{not json\n")
                self._chunk(b"")
                return True
            if script.fault == "error_line":
                self._line({"error": "an error was encountered while running the model: out of memory"})
                self._chunk(b"")
                return True
            if script.fault == "no_final_chunk":
                self._chunk(b"")
                return True
            return False

    return Handler
