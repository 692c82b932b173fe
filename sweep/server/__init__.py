"""chimera-sweep's embedded engine: an Ollama-compatible HTTP server on llama.cpp.

Run it with ``python -m sweep.server --port 11435``.  What a script may import from here
(``__all__``): :func:`start` (start it on a free port and wait until it answers) and
:class:`EmbeddedServer` (the handle :func:`start` returns: ``base_url``, ``stop()``), plus the
two strings the server prints and reports.  Everything else in ``sweep.server.*`` is internal.
``import sweep.server`` stays cheap: the launcher is imported on first use.  The README's
"Embedded server" section documents the HTTP side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweep.server.launch import EmbeddedServer, start

__version__ = "0.1.0"

from sweep.server.identity import OLLAMA_API_VERSION, READY_PREFIX

__all__ = ["start", "EmbeddedServer", "OLLAMA_API_VERSION", "READY_PREFIX"]


def __getattr__(name: str) -> Any:
    """Import the launcher's names on first use (PEP 562)."""
    if name in ("start", "EmbeddedServer"):
        return getattr(importlib.import_module("sweep.server.launch"), name)
    raise AttributeError(f"module 'sweep.server' has no attribute {name!r}")
