"""The command line every generated docs page shares: write the page, or ``--check`` that it is current.

Why one module: ``columns_page.py`` and ``summary_page.py`` each generate a page from the one place
its facts are declared; how a stale page is reported (one line naming the script, exit 1) is the same
fact for both, so it is written here once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable


def main(page: Path, text: Callable[[], str], script: str, description: str,
         argv: list[str] | None = None) -> int:
    """Write ``text()`` to ``page``; with ``--check``, exit 1 (and say how to fix it) when ``page`` differs."""
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if {page.relative_to(root)} is not what it generates")
    opts = parser.parse_args(argv)
    wanted = text()
    if opts.check:
        current = page.read_text(encoding="utf-8") if page.exists() else ""
        if current != wanted:
            print(f"{page.relative_to(root)} is stale: run python scripts/{script}", file=sys.stderr)
            return 1
        return 0
    page.write_text(wanted, encoding="utf-8")
    print(f"wrote {page.relative_to(root)}")
    return 0
