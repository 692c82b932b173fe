"""One streamed cell for tests that measure a call without composing a config (Hydra)."""

from __future__ import annotations

from sweep.cells import Cell, Prompt

REPORT_PROMPT = Prompt("0", "Generate a technical report")


def make_cell(model: str = "gemma3:latest", endpoint: str = "generate", backend: str = "ollama",
              **options: object) -> Cell:
    """A chimera cell of the ``report`` workload with one prompt and the given request options."""
    return Cell(preset="chimera", model=model, backend=backend, base_url=None, options=options,
                workload="report", prompts=(REPORT_PROMPT,), system=None, endpoint=endpoint, keep_alive=None)
