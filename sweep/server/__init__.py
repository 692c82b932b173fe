"""chimera-sweep's embedded engine: an Ollama-compatible HTTP server on llama.cpp.

Run it with ``python -m sweep.server --port 11435``; start and stop it from
Python with :func:`sweep.server.launch.start`.  The README's "Embedded server" section documents it.
"""

__version__ = "0.1.0"

#: What GET /api/version reports: the Ollama API level we follow, tagged as ours.
OLLAMA_API_VERSION = "0.12.3-chimera"

#: The one line printed to stdout when the server accepts connections; launch.py parses it.
READY_PREFIX = "chimera-sweep server listening on "
