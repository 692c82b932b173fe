"""chimera-sweep's own speed: ``python -m benchmarks [NAME ...] [--quick]`` prints one table of figures
against their goals and writes them to ``benchmarks/results.json``.

A command, not a library: nothing here is for scripts to import (``__all__`` is empty).  Read the
figures from results.json; the goals and the individual benchmarks are internal.
"""

__all__: list[str] = []
