"""The two strings the embedded server shows the world: its API version and its ready line.

Why a module of its own: the launcher parses the ready line the server's ``__main__`` prints,
and the package re-exports both as public names; kept in a leaf, neither the launcher nor the
routes import the package ``__init__`` that imports them (a parent-child circle).
"""

from __future__ import annotations

#: What GET /api/version reports: the Ollama API level we follow, tagged as ours.
OLLAMA_API_VERSION = "0.12.3-chimera"

#: The one line printed to stdout when the server accepts connections; launch.py parses it.
READY_PREFIX = "chimera-sweep server listening on "
