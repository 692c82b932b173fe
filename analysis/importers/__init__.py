"""Results of the original harnesses (the Rust single agent, its multi-agent runner, the Python agents) as trial rows.

``python -m analysis OLD_FOLDER`` detects such a folder (:func:`is_harness_folder`),
converts its files into rows of our trial contract (:func:`import_folder`, one module
per format: :mod:`~analysis.importers.rust_single`, :mod:`~analysis.importers.rust_multi`,
:mod:`~analysis.importers.python_multi`), keeps the conversion beside it, and hands the
rows to the same report as our sweeps; :mod:`~analysis.importers.notes` adds what the
report must say about them.  :mod:`~analysis.importers.generate` writes example folders
of each format (tests, benchmarks, docs).
"""

from analysis.importers.common import short_float
from analysis.importers.folder import HARNESSES, is_harness_folder
from analysis.importers.store import IMPORT_DIR, TRIALS_FILE, Imported, import_folder

__all__ = ["HARNESSES", "IMPORT_DIR", "TRIALS_FILE", "Imported", "import_folder", "is_harness_folder", "short_float"]
