"""``num_gpu`` on a server that runs on the CPU only: said once, so a sweep over it is not read as a finding.

Why: the headline example sweeps ``num_gpu`` and the default engine is a CPU
build of llama.cpp; every num_gpu level then measures the same thing, and
nothing said so.  Two ways to know, both before a reader trusts a difference:

* before any request (the plan, the dry run): the embedded engine is this
  machine's llama.cpp, whose build says whether it can offload at all
  (:func:`sweep.server.vram.gpu_offload_supported`);
* for any server, after the first call of a cell that set ``num_gpu``:
  ``GET /api/ps`` reports the model loaded with ``size_vram`` 0.

The line is printed once per process (a multirun's jobs share it), whichever
way found it first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sweep.backends.kinds import Start, kind_of
from sweep.cells import Cell
from sweep.config import BackendConfig

OPTION = "num_gpu"
_said: list[str] = []      # the line, once said in this process


def _note(where: str, why: str) -> str:
    return (f"note: num_gpu has no effect on {where}: it runs on the CPU only ({why}); cells that differ only "
            f"in num_gpu measure the same thing")


def sets_num_gpu(cells: Iterable[Cell]) -> bool:
    """Some cell sends ``num_gpu`` (null = not sent, the server decides)."""
    return any(c.options.get(OPTION) is not None for c in cells)


def planned_note(backend: BackendConfig, cells: Iterable[Cell]) -> str | None:
    """The note before any request: only the embedded engine's build can be known without asking the server."""
    if kind_of(backend).start is not Start.EMBEDDED or not sets_num_gpu(cells):
        return None
    from sweep.server.vram import gpu_offload_supported    # imports llama.cpp: only when num_gpu is set

    if gpu_offload_supported():
        return None
    return _note("the embedded engine", "this llama.cpp build cannot offload layers to a GPU")


def measured_note(cell: Cell, snapshot: Mapping[str, Any]) -> str | None:
    """The note from ``/api/ps`` after a call of ``cell``: the model is loaded and none of it is in VRAM."""
    size, vram = snapshot.get("size"), snapshot.get("size_vram")
    if cell.options.get(OPTION) in (None, 0) or not size or vram != 0:
        return None
    return _note("this server", f"GET /api/ps: {cell.model} loaded with size_vram 0 although num_gpu="
                                f"{cell.options[OPTION]}")


def say_once(line: str | None, say: Callable[[str], None] | None = None) -> bool:
    """Print ``line`` unless a note was already said in this process; True when printed."""
    if line is None or _said:
        return False
    _said.append(line)
    (say or (lambda text: print(text, file=sys.stderr, flush=True)))(line)
    return True
