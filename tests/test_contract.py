"""The data contract is written once: in sweep/contract.py.  These tests fail if a copy reappears.

Each fact that ties the sweep, the server and the analysis together (column names and
types, option keys, types and ranges, status values, file-layout names, the reader of a
sweep directory) is declared in :mod:`sweep.contract`; the other modules import it.
A literal restatement elsewhere is how the old copies drifted (num_thread's range, the
read-race fix made twice), so the source is scanned for them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from sweep import contract
from sweep.contract import COLUMN_NAMES, OPTION_KEYS, OPTIONS, SCHEMA, Status

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for pkg in ("sweep", "analysis", "benchmarks") for p in (ROOT / pkg).rglob("*.py")
                 if p.name != "contract.py")


def _code(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# A fact, and a pattern that finds it restated as a literal definition outside the contract.
RESTATEMENTS = {
    "the provenance key": re.compile(r"b[\"']chimera\.provenance[\"']"),
    "the run file name": re.compile(r"=\s*[\"']_run\.json[\"']"),
    "the run lock name": re.compile(r"[\"']_run\.lock[\"']"),
    "the telemetry dir name": re.compile(r"=\s*[\"']_telemetry[\"']"),
    "the default output root": re.compile(r"[\"']outputs/sweeps[\"']"),
    "an option list": re.compile(r"[\"']num_\w+[\"'],\s*[\"']num_\w+[\"'],\s*[\"']num_\w+[\"']"),
    "a status list": re.compile(r"[\"']connect_error[\"'],\s*[\"']"),
    "a read of a file by path (use contract.read_whole: one handle)": re.compile(r"pq\.read_table\(\s*(?!handle)"),
    "a Parquet listing (use contract.trial_files)": re.compile(r"\.r?glob\([\"']\*\.parquet[\"']\)"),
    "a sweep listing (use contract.newest_sweep)": re.compile(r"def newest_sweep\(.*\n(?:.*\n){0,2}.*(glob|iterdir)"),
    "HTTP codes parsed out of error text": re.compile(r"startswith\(\(?[\"']HTTP "),
    "a cell's file name (use contract.cell_path)": re.compile(r"file_stem\}\.parquet"),
}


@pytest.mark.parametrize("fact", sorted(RESTATEMENTS))
def test_no_copy_of_the_contract_outside_it(fact: str) -> None:
    pattern = RESTATEMENTS[fact]
    found = [f"{p.relative_to(ROOT)}" for p in SOURCES if pattern.search(_code(p))]
    assert not found, f"{fact} is restated in {found}: import it from sweep.contract instead"


def test_the_pattern_list_would_catch_the_old_copies() -> None:
    """The scan is not vacuous: each pattern matches the copy it was written against."""
    old = {
        "the provenance key": 'PROVENANCE_KEY = b"chimera.provenance"',
        "the run file name": 'RUN_FILE = "_run.json"',
        "the run lock name": 'open(sweep_dir / "_run.lock", "a")',
        "the telemetry dir name": 'TRACES_DIR = "_telemetry"',
        "the default output root": '_DEFAULT_ROOT = "outputs/sweeps"',
        "an option list": 'LOAD_TIME_OPTIONS = ("num_ctx", "num_gpu", "num_batch", "num_thread")',
        "a status list": 'frozenset({"connect_error", "protocol_error"})',
        "a read of a file by path (use contract.read_whole: one handle)": "pq.read_table(path)",
        "a Parquet listing (use contract.trial_files)": 'directory.rglob("*.parquet")',
        "a sweep listing (use contract.newest_sweep)":
            'def newest_sweep(root: Path) -> Path | None:\n    sweeps = [p for p in root.glob("*")]',
        "HTTP codes parsed out of error text": '(record.error or "").startswith(("HTTP 5", "HTTP 429"))',
        "a cell's file name (use contract.cell_path)": 'path = sweep_dir / f"{cell.file_stem}.parquet"',
    }
    assert set(old) == set(RESTATEMENTS)
    for fact, text in old.items():
        assert RESTATEMENTS[fact].search(text), fact


def test_every_side_reads_the_contract() -> None:
    """The writer, the server's validation, the analysis loader and the config schema use the same objects."""
    from analysis import columns, load
    from sweep import config, plan, store
    from sweep.server import options

    assert store.to_table is contract.to_table and store.read_whole is contract.read_whole
    assert load.read_whole is contract.read_whole and load.read_tables is contract.read_tables
    assert plan.OPTION_KEYS is OPTION_KEYS and columns.OPTION_KEYS is OPTION_KEYS
    assert set(options._LOAD_OPTIONS) == {o.name for o in OPTIONS if o.load_time}
    assert set(options._LOAD_OPTIONS) | set(options._SAMPLING_OPTIONS) == {o.name for o in OPTIONS}
    chimera = {f.name for f in config.ChimeraConfig.__dataclass_fields__.values()} - {"preset"}
    assert chimera == set(OPTION_KEYS)


def test_options_are_columns_in_cell_id_order() -> None:
    # Cell ids (and so file names of existing sweeps) list options in this order.
    assert OPTION_KEYS == ("num_gpu", "num_ctx", "num_thread", "num_batch", "temperature", "top_p", "top_k",
                           "repeat_penalty", "seed", "num_predict")
    assert set(OPTION_KEYS) <= set(COLUMN_NAMES)


def test_num_thread_zero_is_one_range_for_sweep_and_server() -> None:
    """0 means "the runtime decides" to Ollama and our server; the sweep accepts the same range."""
    from sweep.cells import ConfigError, validate_options
    from sweep.server.options import OptionError, parse_options

    validate_options({"num_thread": 0})
    assert parse_options({"num_thread": 0})[0].n_threads is None
    with pytest.raises(ConfigError, match=r"num_thread=-1: must be between 0 and 1024"):
        validate_options({"num_thread": -1})
    with pytest.raises(OptionError, match=r"'num_thread': must be between 0 and 1024, got -1"):
        parse_options({"num_thread": -1})


def test_existing_columns_keep_their_names_types_and_order() -> None:
    """Parquet files of older sweeps are read by name: new columns go only at the end."""
    head = [("sweep_id", pa.string()), ("cell_id", pa.string()), ("cell_hash", pa.string()),
            ("preset", pa.string()), ("model", pa.string()), ("backend", pa.string()), ("base_url", pa.string()),
            ("num_gpu", pa.int64()), ("num_ctx", pa.int64()), ("temperature", pa.float64())]
    assert [(f.name, f.type) for f in SCHEMA][:len(head)] == head
    i = COLUMN_NAMES.index("run_kind")                       # later columns (issue 16's) follow these
    assert COLUMN_NAMES[i:i + 2] == ("run_kind", "http_status")
    i = COLUMN_NAMES.index("stop_reason")                    # then the client-side share (issue 16)
    assert COLUMN_NAMES[i:i + 3] == ("stop_reason", "client_overhead_ms", "client_ttft_overhead_ms")
    i = COLUMN_NAMES.index("source")                         # then imported results (issue 28)
    assert COLUMN_NAMES[i:i + 2] == ("source", "aggregated_calls")
    i = COLUMN_NAMES.index("background_cpu_pct")             # then the background load (issue 26)
    assert COLUMN_NAMES[i - 1:i + 2] == ("aggregated_calls", "background_cpu_pct", "loadavg_1m")
    i = COLUMN_NAMES.index("load_loop")                      # then load generation (issue 29)
    assert COLUMN_NAMES[i:i + 3] == ("load_loop", "load_arrivals", "load_rate")
    assert "server_parallel" in COLUMN_NAMES[i + 2:]         # issue 29's blocks follow, in the order they merged
    i = COLUMN_NAMES.index("prompt_tokens")                  # lengths under control (issue 29)
    assert COLUMN_NAMES[i:i + 2] == ("prompt_tokens", "short_output")
    assert COLUMN_NAMES.index("prompt_tokens_per_s") > i      # then the report's prompt speed (issue 29)
    assert SCHEMA.field("started_at").type == pa.timestamp("us", tz="UTC")


def test_status_values_are_unchanged_text() -> None:
    assert [s.value for s in Status] == ["ok", "connect_error", "http_error", "server_error", "protocol_error",
                                        "stall", "timeout", "skipped"]
    assert Status.OK == "ok" and f"{Status.STALL}" == "stall"


@pytest.mark.parametrize(("status", "code", "retry"), [
    ("http_error", 500, True), ("http_error", 503, True), ("http_error", 429, True),
    ("http_error", 404, False), ("http_error", 400, False), ("http_error", None, False),
    ("stall", None, True), ("connect_error", None, True), ("ok", 200, False),
])
def test_retry_reads_the_http_code_not_the_text(status: str, code: int | None, retry: bool) -> None:
    assert contract.is_transient(status, code) is retry


def test_trial_files_and_newest_sweep(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "_hidden").mkdir()
    newest = tmp_path / "new"
    (newest / "_telemetry").mkdir(parents=True)
    (newest / "_hydra").mkdir()
    for rel in ("a.parquet", "_telemetry/a.parquet", "_hydra/x.parquet", ".a.parquet.tmp.parquet"):
        (newest / rel).write_bytes(b"")
    import os
    os.utime(tmp_path / "old", (1, 1))
    assert contract.newest_sweep(tmp_path) == newest
    assert contract.newest_sweep(tmp_path / "missing") is None
    assert [p.name for p in contract.trial_files(newest)] == ["a.parquet"]
