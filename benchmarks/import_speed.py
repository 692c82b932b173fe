"""Importing the original harnesses' results: 1,000 Rust single-agent run folders → trial rows, goal < 10 s.

Why a benchmark: a user's folder of old results holds hundreds of run directories,
each a ``metrics.json`` of a few hundred KB (prompts and responses included);
``python -m analysis OLD_FOLDER`` converts them once and keeps the rows.  Figures:

- ``import_1000_runs_s``: the first conversion of ``runs`` generated run folders
  (find the files, parse the JSON, build the rows, write ``_imported/trials.parquet``);
- ``import_reuse_s``: a second call, which reads the kept rows back (files unchanged);
- ``import_rows``: trial rows made (one per LLM call).

The folders are generated (:mod:`analysis.importers.generate`) with five runs per
agent, as ``cargo run -- --runs 5`` writes them, and ``text_chars`` of text per prompt
and response.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from analysis.importers import generate, import_folder


def measure(runs: int = 1_000, workflow_runs: int = 5, text_chars: int = 2_000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "old_results"
        for i in range(runs):
            generate.rust_single(root / f"gpu{60 + i % 40}_ctx{256 * (1 + i % 4)}_run{i:04d}", runs=workflow_runs,
                                 seed=i, text_chars=text_chars)
        started = time.perf_counter()
        first = import_folder(root)
        convert_s = time.perf_counter() - started
        started = time.perf_counter()
        again = import_folder(root)
        reuse_s = time.perf_counter() - started
        assert not first.problems and again.reused and again.table.num_rows == first.table.num_rows
        return {"import_1000_runs_s" if runs == 1_000 else f"import_{runs}_runs_s": convert_s,
                "import_reuse_s": reuse_s, "import_rows": float(first.table.num_rows)}
