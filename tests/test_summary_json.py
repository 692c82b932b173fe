"""``_report/summary.json`` (issue 29): every key documented by its schema, the numbers the report's, the gate's
result beside the cells by default.

The schema forbids undeclared keys in every fixed object, so "the file validates" is "every key is
documented"; docs/summary.md is generated from the same schema (scripts/summary_page.py --check).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
from hypothesis import given, settings

from analysis import summary_json
from analysis.load import InputError
from tests.test_gate import _sweep
from tests.test_latency_report import _build, _hand_cell
from tests.trial_tables import Spec, specs, table
from tests.sweep_cli import clean_env, run_module

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = jsonschema.Draft202012Validator(summary_json.schema())


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        for name, child in node.get("properties", {}).items():
            out.append((f"{path}.{name}", child))
            out += _walk(child, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                out += _walk(node[key], path + "[]")
        for alt in node.get("oneOf", []):
            out += _walk(alt, path)
    return out


def test_the_schema_is_a_schema_and_every_key_says_what_it_is() -> None:
    jsonschema.Draft202012Validator.check_schema(summary_json.schema())
    keys = _walk(summary_json.schema())
    assert len(keys) > 40
    assert [k for k, node in keys if not node.get("description")] == []


def test_the_docs_page_is_generated_from_the_schema() -> None:
    r = subprocess.run([sys.executable, "scripts/summary_page.py", "--check"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    page = (ROOT / "docs" / "summary.md").read_text()
    for key, _ in _walk(summary_json.schema()):
        assert key.split(".")[-1] in page, key


def test_an_undocumented_key_fails_validation(tmp_path: Path) -> None:
    doc = json.loads((_build(_hand_cell(), tmp_path).out_dir / "summary.json").read_text())
    VALIDATOR.validate(doc)
    for where in (doc, doc["cells"][0], doc["cells"][0]["metrics"], doc["cells"][0]["metrics"]["ttft_ms"]):
        where["undocumented"] = 1
        with pytest.raises(jsonschema.ValidationError):
            VALIDATOR.validate(doc)
        del where["undocumented"]


def test_summary_holds_the_reports_numbers_by_hand(tmp_path: Path) -> None:
    report = _build(_hand_cell(), tmp_path)
    doc = json.loads((report.out_dir / "summary.json").read_text())
    VALIDATOR.validate(doc)
    assert doc["schema_version"] == 1 and doc["gate"] is None and doc["comparisons"] == []
    assert doc["comparisons_note"]                          # why there is none
    (cell,) = doc["cells"]
    assert cell["n"] == 3 and cell["warmups"] == 1 and cell["options"] == {"num_ctx": 512}
    m = cell["metrics"]
    assert [m["ttft_ms"][p] for p in ("p50", "p95", "p99")] == pytest.approx([200.0, 290.0, 298.0])
    assert [m["e2e_ms"][p] for p in ("p50", "p95", "p99")] == pytest.approx([1200.0, 1380.0, 1396.0])
    assert m["tpot_ms"]["mean"] == pytest.approx(85.0) and m["tpot_ms"]["n"] == 3
    assert m["prompt_tokens_per_s"]["mean"] == pytest.approx(300.0)
    assert m["itl_ms_p99"]["mean"] == pytest.approx(2 * (90 + 100 + 140) / 3)
    timing = report.analysis.get("token_timing").frame.iloc[0]
    assert m["tpot_ms"]["ci_lo"] == pytest.approx(timing["TPOT ms CI95 lo"])      # the table's interval, unrounded
    assert m["e2e_ms"]["ci_lo"] < m["e2e_ms"]["mean"] < m["e2e_ms"]["ci_hi"]


@pytest.mark.slow   # seconds by design: a full report built for each generated sweep; make test runs it
@settings(max_examples=15, deadline=None)
@given(spec=specs())
def test_every_generated_sweep_writes_a_valid_summary(spec: Spec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = _build(table(spec), Path(tmp))
        except InputError:
            return
        doc = json.loads((report.out_dir / "summary.json").read_text())   # strict JSON: no NaN
        VALIDATOR.validate(doc)
        assert len(doc["cells"]) == len(report.analysis.cells)
        for cell in doc["cells"]:
            for stats in cell["metrics"].values():
                if stats.get("ci_lo") is not None:
                    assert stats["ci_lo"] <= stats["mean"] <= stats["ci_hi"]
                    assert stats["ci_lo"] > 0
        bvc = report.analysis.get("baseline_vs_chimera")
        assert len(doc["comparisons"]) == (0 if bvc is None else len(bvc.frame))


def _analysis(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_module("analysis", *map(str, args), cwd=cwd, timeout=180, env=clean_env(cwd))


@pytest.mark.slow
def test_the_gate_lands_in_the_report_directory_by_default_and_in_out_when_given(tmp_path: Path) -> None:
    old = _sweep(tmp_path / "old.csv", 1, "OLD")
    new_dir = tmp_path / "new"
    new_dir.mkdir()
    new = _sweep(new_dir / "new.csv", 2, "NEW", slow={(2048, 2): 0.90})
    r = _analysis(new, "--against", old, "--gate", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    report_dir = new_dir / "_report"
    gate_csv = pd.read_csv(report_dir / "gate.csv")
    assert (gate_csv["verdict"] == "REGRESSION").sum() == 1
    doc = json.loads((report_dir / "summary.json").read_text())
    VALIDATOR.validate(doc)
    assert doc["gate"]["exit_code"] == 1 and doc["gate"]["regressions"] == 1
    assert doc["gate"]["verdict"].startswith("1 significant regression")
    assert len(doc["gate"]["rows"]) == len(gate_csv) and len(doc["cells"]) == 4
    bad = [row for row in doc["gate"]["rows"] if row["verdict"] == "REGRESSION"]
    assert -12 < bad[0]["Δ %"] < -8
    r = _analysis(new, "--against", old, "--out", tmp_path / "g", cwd=tmp_path)          # --out still works
    assert r.returncode == 0 and (tmp_path / "g" / "gate.csv").is_file()
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["gate"]["exit_code"] == 1
    r = _analysis(new, "--no-figures", "--quiet", cwd=tmp_path)                          # a plain report: no gate
    assert r.returncode == 0, r.stderr
    assert json.loads((report_dir / "summary.json").read_text())["gate"] is None
