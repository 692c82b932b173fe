"""Former home of the trial record; the data contract now lives in :mod:`sweep.contract`.

Kept as a re-export so scripts (and branches in flight) that import ``sweep.records``
keep working.  New code imports :mod:`sweep.contract`; nothing is declared here.
"""

from __future__ import annotations

from sweep.contract import (  # noqa: F401  (re-exports)
    COLUMN_NAMES, COLUMNS, OPTION_KEYS, SCHEMA, Column, Status, TrialRecord, markdown_table, to_table, utc_now,
)

STATUS_OK = Status.OK
STATUS_KINDS: tuple[Status, ...] = tuple(Status)
