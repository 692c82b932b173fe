"""``python -m sweep.server``: serve the Ollama API on llama.cpp.

Why the socket is bound here and handed to uvicorn: with ``--port 0`` the OS
picks a free port, and we must know which one to print the ready line that
:mod:`sweep.server.launch` waits for.  The line is printed only once uvicorn
has started accepting connections.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from typing import Sequence

from .identity import READY_PREFIX


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sweep.server", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=11435, help="port; 0 picks a free one (default 11435)")
    p.add_argument("--model-dir", help="directory whose *.gguf files are served, named by file stem")
    p.add_argument("--model", action="append", default=[], metavar="PATH_OR_NAME",
                   help="a .gguf path (named by stem), NAME=PATH, or a known name to check; repeatable")
    p.add_argument("--keep-alive", default="5m",
                   help="default keep_alive for requests that set none (default 5m; Ollama syntax)")
    p.add_argument("--max-loaded-models", type=int, default=None,
                   help="models kept in memory at once (default $OLLAMA_MAX_LOADED_MODELS or 3)")
    p.add_argument("--parallel", type=int, default=None, metavar="N",
                   help="requests each loaded model generates at once; more wait in a queue (default "
                        "$OLLAMA_NUM_PARALLEL or 1).  Every slot holds a KV cache of the full num_ctx")
    p.add_argument("--no-prompt-cache", action="store_true",
                   help="never reuse a cached prompt prefix (every request evaluates its whole prompt)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")
    return p.parse_args(argv)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen ourselves so port 0 works and the real port is known.

    The socket is made with ``IPPROTO_TCP`` and ``TCP_NODELAY``: asyncio switches
    Nagle's algorithm off only on sockets whose ``proto`` says TCP, and an
    accepted socket copies the listener's ``proto`` (0 with a bare
    ``socket(family, SOCK_STREAM)``).  With Nagle on, the first token's chunk
    waited for the client's delayed ACK of the response headers: measured,
    client TTFT was prompt time + ~45 ms on every other request of a
    keep-alive connection (21 / 70 ms alternating in ``make demo``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets on Linux
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


async def _serve(server: "object", sock: socket.socket, url: str) -> None:
    import uvicorn

    assert isinstance(server, uvicorn.Server)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # startup failed: surface the exception
            return
        await asyncio.sleep(0.01)
    print(READY_PREFIX + url, flush=True)
    await task


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import llama_cpp  # noqa: F401  (fail fast, with the fix in the message)
    except ImportError as exc:
        print(f"error: llama-cpp-python is not importable ({exc}); "
              "install it with: python scripts/install_engine.py", file=sys.stderr)
        return 2
    import uvicorn

    from .app import create_app
    from .streaming import expose_transport
    from .engine import Engine, default_max_loaded, parallel_from_env
    from .models import default_registry
    from .options import OptionError, parse_keep_alive

    if args.parallel is not None and args.parallel < 1:
        print(f"error: --parallel {args.parallel}: must be >= 1 (1 serves one request at a time)", file=sys.stderr)
        return 2
    try:
        parallel = args.parallel or parallel_from_env()
        keep_alive = parse_keep_alive(args.keep_alive)
        registry = default_registry(args.model_dir, args.model)
    except (OptionError, OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = Engine(registry, max_loaded=args.max_loaded_models or default_max_loaded(),
                    prompt_cache=not args.no_prompt_cache, parallel=parallel)
    app = create_app(engine, registry, keep_alive_s=keep_alive)
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    config = uvicorn.Config(expose_transport(app), log_level=args.log_level, access_log=args.access_log,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    asyncio.run(_serve(server, sock, f"http://{host}:{port}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
