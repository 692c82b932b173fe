"""Lengths under control (issue 29): workload.prompt_tokens, workload.max_tokens, ignore_eos, +experiment=pp_tg.

Exact-N checks ask the server itself: its tokenizer route and the ``prompt_eval_count`` it
reports for the real request; the fallback path runs against the stand-in, which has no
``/api/tokenize`` and counts a prompt as its words plus one (a BOS).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig

from analysis import flags
from analysis.load import load
from sweep.backends.http import StreamClient
from sweep.backends.kinds import OLLAMA
from sweep.cells import ConfigError
from sweep.config import typed
from sweep.plan import plan_cells
from sweep.runner import Target
from sweep.testing.standin import Script, StandIn
from sweep.workloads import lengths
from tests.sweep_cli import REPO, only_sweep, run_sweep, trials_of

# ---------------------------------------------------------------- planning: one fact, refusals, wire fields


def test_max_tokens_is_num_predict_and_a_contradiction_is_refused(compose_cfg: Callable[..., DictConfig]) -> None:
    (cell,) = plan_cells(typed(compose_cfg("chimera=baseline", "workload.max_tokens=64")))
    assert cell.options["num_predict"] == 64 and cell.lengths is not None and cell.lengths.max_tokens == 64
    (same,) = plan_cells(typed(compose_cfg("chimera=baseline", "workload.max_tokens=64", "chimera.num_predict=64")))
    assert same.options == cell.options
    with pytest.raises(ConfigError, match=r"workload.max_tokens=64 and num_predict=32 .*chimera.num_predict=null"):
        plan_cells(typed(compose_cfg("chimera=baseline", "workload.max_tokens=64", "chimera.num_predict=32")))


@pytest.mark.parametrize("overrides, message", [
    (["workload.ignore_eos=true"], "needs an output length: add workload.max_tokens"),
    (["workload.prompt_tokens=0"], "invalid workload.prompt_tokens=0"),
    (["workload.max_tokens=-3"], "invalid workload.max_tokens=-3"),
    (["workload=agent_report", "workload.prompt_tokens=64"], "for prompt workloads"),
    (["workload.prompt_tokens=64", f"workload.prompt_file={REPO / 'README.md'}"], "drop workload.prompt_file"),
    (["workload.raw=true", "workload.endpoint=chat"], "use workload.endpoint=generate"),
    (["workload.prompt_tokens=600", "workload.max_tokens=8", "chimera.num_ctx=512"], "chimera.num_ctx=608"),
])
def test_bad_lengths_are_refused_in_one_line(compose_cfg: Callable[..., DictConfig], overrides: list[str],
                                             message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        plan_cells(typed(compose_cfg("chimera=baseline", *overrides)))
    assert "\n" not in str(err.value)


def test_each_backend_kind_gets_the_wire_fields_it_understands(compose_cfg: Callable[..., DictConfig]) -> None:
    args = ("chimera=baseline", "workload.prompt_tokens=32", "workload.max_tokens=16", "workload.ignore_eos=true",
            "workload.raw=true")
    (embedded,) = plan_cells(typed(compose_cfg(*args)))
    assert dict(embedded.lengths.options) == {"ignore_eos": True}
    assert dict(embedded.lengths.body) == {"cache_prompt": False, "raw": True}
    (ollama,) = plan_cells(typed(compose_cfg(*args, "backend=ollama", "backend.base_url=http://127.0.0.1:9")))
    assert dict(ollama.lengths.options) == {} and dict(ollama.lengths.body) == {"raw": True}   # no EOS switch
    (openai,) = plan_cells(typed(compose_cfg(*args, "backend=openai", "backend.base_url=http://127.0.0.1:9/v1",
                                       "workload.endpoint=generate")))
    assert dict(openai.lengths.body) == {"ignore_eos": True}
    body = OLLAMA.request(embedded, "text")[1]
    assert body["options"] == {"num_predict": 16, "ignore_eos": True} and body["raw"] is True
    assert body["cache_prompt"] is False


def test_pp_tg_plans_two_cells_whose_hash_does_not_depend_on_the_text(compose_cfg: Callable[..., DictConfig]) -> None:
    pp, tg = plan_cells(typed(compose_cfg("+experiment=pp_tg")))
    assert (pp.lengths.prompt_tokens, pp.options["num_predict"], pp.lengths.ignore_eos) == (512, 1, False)
    assert (tg.lengths.prompt_tokens, tg.options["num_predict"], tg.lengths.ignore_eos) == (16, 128, True)
    assert "prompt_tokens=512" in pp.cell_id and "ignore_eos" in tg.cell_id and pp.cell_hash != tg.cell_hash
    import dataclasses

    from sweep.cells import Prompt

    built = dataclasses.replace(pp, prompts=(Prompt("filler", "the of and"),))
    assert built.cell_hash == pp.cell_hash    # resume matches the cell whatever text the tokenizer gave
    (plain,) = plan_cells(typed(compose_cfg("chimera=baseline")))
    assert plain.lengths is None              # cells without lengths keep the hashes older sweeps stored
    (seeded,) = plan_cells(typed(compose_cfg("chimera=baseline", "workload.prompt_tokens=512", "workload.max_tokens=1",
                                       "workload.prompt_seed=7")))
    (other,) = plan_cells(typed(compose_cfg("chimera=baseline", "workload.prompt_tokens=512", "workload.max_tokens=1")))
    assert seeded.cell_hash != other.cell_hash


# ---------------------------------------------------------------- the search for N tokens, on counters with known answers


def _words_counter(overhead: int, two_token: frozenset[str]) -> Callable[[str], Any]:
    """A tokenizer that counts a word as one token (two for ``two_token`` words), plus ``overhead``."""
    async def count(text: str) -> int:
        return overhead + sum(2 if w in two_token else 1 for w in text.split())
    return count


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 400), overhead=st.integers(0, 2), seed=st.integers(0, 5),
       two=st.sets(st.sampled_from(lengths.WORDS), max_size=40))
def test_closest_text_hits_every_reachable_count(n: int, overhead: int, seed: int, two: set[str]) -> None:
    text, got = asyncio.run(lengths.closest_text(n, seed, _words_counter(overhead, frozenset(two))))
    assert got == n and asyncio.run(_words_counter(overhead, frozenset(two))(text)) == n
    assert text.startswith(lengths.filler(seed, 1))   # deterministic: the seed's words first


def test_closest_text_by_hand() -> None:
    # "the" (seed 0's words) one token each, BOS one: 5 tokens = BOS + 4 words
    text, got = asyncio.run(lengths.closest_text(5, 0, _words_counter(1, frozenset())))
    assert (got, text) == (5, lengths.filler(0, 4)) and len(text.split()) == 4
    # when the first word alone is already too long, it says so instead of pretending
    text, got = asyncio.run(lengths.closest_text(1, 0, _words_counter(1, frozenset())))
    assert got == 2 and text == lengths.filler(0, 1)


# ---------------------------------------------------------------- the embedded server: /api/tokenize and ignore_eos


@pytest.mark.shares_machine   # token counts, not speed
def test_tokenize_route_matches_what_the_engine_evaluates(http: httpx.Client) -> None:
    tokens = http.post("/api/tokenize", json={"model": "gemma3:270m", "content": "hello world the cat"}).json()
    assert tokens["model"] == "gemma3:270m" and len(tokens["tokens"]) == 4
    assert http.post("/api/tokenize", json={"model": "nope:1b", "content": "x"}).status_code == 404
    assert http.post("/api/tokenize", json={"model": "gemma3:270m", "content": 5}).status_code == 400
    final = http.post("/api/generate", json={"model": "gemma3:270m", "prompt": "hello world the cat", "raw": True,
                                             "stream": False, "options": {"num_predict": 1}}).json()
    assert final["prompt_eval_count"] == len(tokens["tokens"]) + 1    # Gemma's BOS


def _build(base_url: str, cell: Any) -> lengths.Built:
    async def go() -> lengths.Built:
        async with StreamClient(base_url) as client:
            return await lengths.build(Target(client, OLLAMA, 600), cell)
    return asyncio.run(go())


@pytest.mark.shares_machine   # token counts, not speed
@pytest.mark.parametrize("n", [7, 100, 512])
def test_prompt_tokens_is_exact_on_the_embedded_engine(embedded_server: Any, http: httpx.Client,
                                                       compose_cfg: Callable[..., DictConfig], n: int) -> None:
    (cell,) = plan_cells(typed(compose_cfg("chimera=baseline", f"workload.prompt_tokens={n}", "workload.max_tokens=1",
                                     "workload.raw=true", "chimera.temperature=0")))
    built = _build(embedded_server.base_url, cell)
    assert built.method == "tokenize /api/tokenize" and built.served == n
    for _ in range(2):    # the server's own count, twice: cache_prompt=false, so never a cached prefix
        final = http.post("/api/generate", json={"model": "gemma3:270m", "prompt": built.text, "raw": True,
                                                 "stream": False, "cache_prompt": False,
                                                 "options": {"num_predict": 1, "temperature": 0}}).json()
        assert final["prompt_eval_count"] == n


@pytest.mark.shares_machine   # token counts, not speed
def test_ignore_eos_generates_past_the_end_of_sequence(http: httpx.Client) -> None:
    # SmolLM2 Instruct answers this in a few tokens and ends; with ignore_eos it writes exactly num_predict
    ask = {"model": "smollm2:135m", "stream": False,
           "messages": [{"role": "user", "content": "Reply with the single word: yes"}]}
    short = http.post("/api/chat", json={**ask, "options": {"num_predict": 48, "temperature": 0}}).json()
    assert short["done_reason"] == "stop" and short["eval_count"] < 48
    full = http.post("/api/chat", json={**ask, "options": {"num_predict": 48, "temperature": 0,
                                                           "ignore_eos": True}}).json()
    assert full["done_reason"] == "length" and full["eval_count"] == 48
    v1 = http.post("/v1/chat/completions", json={"model": "smollm2:135m", "max_tokens": 48, "temperature": 0,
                                                 "ignore_eos": True, "messages": ask["messages"]}).json()
    assert v1["usage"]["completion_tokens"] == 48


# ---------------------------------------------------------------- whole sweeps: embedded, a stand-in without tokenize


def test_pp_tg_sweep_on_the_embedded_engine_holds_its_lengths(tmp_path: Path) -> None:
    done = run_sweep("+experiment=pp_tg", f"output_root={tmp_path}", "trials=2", "progress=false",
                     "grid.lengths=[{prompt_tokens: 64, max_tokens: 1}, {prompt_tokens: 16, max_tokens: 24, "
                     "ignore_eos: true}]", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the server evaluates exactly 64 tokens" in done.stderr
    df = trials_of(tmp_path)
    ok = df[df["status"] == "ok"]
    pp, tg = ok[ok["num_predict"] == 1], ok[ok["num_predict"] == 24]
    assert len(pp) == 3 and len(tg) == 3    # a warm-up and 2 trials each
    assert set(pp["prompt_tokens"]) == {64} and set(pp["prompt_eval_count"]) == {64}
    assert set(tg["prompt_eval_count"]) == {16} and set(tg["eval_count"]) == {24}
    assert not tg["short_output"].any() and tg["throughput_tok_s"].notna().all()


def _counting_standin(standin: StandIn, tokens: int) -> None:
    """The stand-in reports words + 1 prompt tokens (no /api/tokenize) and generates ``tokens`` tokens."""
    standin.script_for = lambda body: Script(tokens=["x"] * tokens,
                                             prompt_eval_count=len(str(body.get("prompt", "")).split()) + 1,
                                             token_interval_s=0.0, first_token_delay_s=0.0)


def test_without_a_tokenize_route_the_reported_count_finds_the_text(standin: StandIn, tmp_path: Path) -> None:
    _counting_standin(standin, 5)
    done = run_sweep("backend=ollama", f"backend.base_url={standin.base_url}", "model.name=gemma3:latest",
                     "chimera=baseline", "workload.prompt_tokens=40", "workload.max_tokens=8",
                     "workload.ignore_eos=true", f"output_root={tmp_path}", "trials=2", "progress=false",
                     "telemetry.enabled=false")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "POST /api/tokenize" in standin.hits                      # asked, 404: fell back to real requests
    assert "(prompt_eval_count)" in done.stderr or "by prompt_eval_count" in done.stderr
    measured = [r for r in standin.requests if r["options"].get("num_predict") == 8]
    assert {len(r["prompt"].split()) + 1 for r in measured} == {40}
    assert all("ignore_eos" not in r["options"] and "ignore_eos" not in r for r in measured)   # Ollama: no switch
    df = trials_of(tmp_path)
    assert set(df["prompt_eval_count"]) == {40} and set(df["prompt_tokens"]) == {40}
    assert df["short_output"].all()                                   # 5 of 8 tokens: flagged, stored
    line = flags.short_output_line(load([only_sweep(tmp_path)]).frame)
    assert line is not None and "(2/2 trials)" in line


def test_the_short_output_flag_counts_by_hand() -> None:
    df = pd.DataFrame({"cell": ["a", "a", "a", "b", "c"], "measured": [True, True, False, True, True],
                       "short_output": [True, False, True, False, None]})
    assert flags.short_output_cells(df) == {"a": (1, 2)}
    assert flags.short_output_line(df.assign(short_output=[False, False, True, False, None])) is None


def test_pp_tg_sweep_on_llama_server_holds_its_lengths(tmp_path: Path) -> None:
    """llama.cpp's own server: N through its /tokenize, ignore_eos and cache_prompt as body fields."""
    from tests.fixtures_server import require_tool

    require_tool("llama-server")
    done = run_sweep("+experiment=pp_tg", "backend=llama_server", f"output_root={tmp_path}", "trials=2",
                     "progress=false", "telemetry.enabled=false",
                     "grid.lengths=[{prompt_tokens: 100, max_tokens: 1}, {prompt_tokens: 16, max_tokens: 24, "
                     "ignore_eos: true}]", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "counted by tokenize /tokenize; the server evaluates exactly 100 tokens" in done.stderr
    df = trials_of(tmp_path)
    ok = df[df["status"] == "ok"]
    pp, tg = ok[ok["num_predict"] == 1], ok[ok["num_predict"] == 24]
    assert set(pp["prompt_eval_count"]) == {100} and pp["prompt_eval_duration_ms"].gt(0).all()
    assert pp["throughput_tok_s"].isna().all()          # one token: no decode rate (llama.cpp says ~10⁶ tok/s)
    assert set(tg["eval_count"]) == {24} and not tg["short_output"].any()


def test_a_plain_openai_server_is_searched_by_its_usage_count(standin: StandIn, tmp_path: Path) -> None:
    """No /tokenize at the root: each step is a real /v1/completions call read for usage.prompt_tokens."""
    _counting_standin(standin, 8)
    done = run_sweep("backend=openai", f"backend.base_url={standin.base_url}/v1", "model=gemma3", "chimera=baseline",
                     "workload.endpoint=generate", "workload.prompt_tokens=33", "workload.max_tokens=8",
                     f"output_root={tmp_path}", "trials=1", "progress=false", "telemetry.enabled=false")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "POST /tokenize" in standin.hits and "the server evaluates exactly 33 tokens" in done.stderr
    measured = [r for r in standin.requests if r.get("max_tokens") == 8]
    assert {len(r["prompt"].split()) + 1 for r in measured} == {33}
    assert all("cache_prompt" not in r and "ignore_eos" not in r for r in measured)   # a plain server: none sent
    df = trials_of(tmp_path)
    assert set(df["prompt_eval_count"]) == {33} and not df["short_output"].any()


def test_the_prompt_length_flag_counts_by_hand() -> None:
    df = pd.DataFrame({"cell": ["a", "a", "a", "b", "c"], "measured": [True, True, True, True, False],
                       "prompt_tokens": [512, 512, 512, None, 64], "prompt_eval_count": [512, 1, 2, 9, 3]})
    assert flags.prompt_mismatch_cells(df) == {"a": (2, 3, [1, 2])}
    line = flags.prompt_mismatch_line(df)
    assert line is not None and "a (2/3 trials: 1, 2)" in line
    assert flags.prompt_mismatch_line(df.assign(prompt_eval_count=[512, 512, 512, 9, 3])) is None


def test_pp_tg_figures_by_hand_and_refused_when_a_length_was_not_held() -> None:
    from benchmarks import pp_tg

    rows = pd.DataFrame({
        "status": ["ok"] * 5, "warmup": [True, False, False, False, False],
        "num_predict": [1, 1, 1, 128, 128], "prompt_eval_count": [512, 512, 512, 16, 16],
        "prompt_eval_duration_ms": [9999.0, 1000.0, 2000.0, 5.0, 5.0], "eval_count": [1, 1, 1, 128, 128],
        "throughput_tok_s": [None, None, None, 50.0, 70.0]})
    got = pp_tg.sweep_figures(rows)
    assert got.pp == pytest.approx((512 + 256) / 2) and got.tg == pytest.approx(60.0)   # the warm-up left out
    with pytest.raises(RuntimeError, match=r"evaluated \[511, 512\] prompt tokens"):
        pp_tg.sweep_figures(rows.assign(prompt_eval_count=[512, 511, 512, 16, 16]))
    with pytest.raises(RuntimeError, match="generated"):
        pp_tg.sweep_figures(rows.assign(eval_count=[1, 1, 1, 100, 128]))
    block = pp_tg.PairBlock("m", 1, [{"llama-bench": pp_tg.Figures(400, 50), "embedded": pp_tg.Figures(360, 45)},
                                     {"llama-bench": pp_tg.Figures(200, 40), "embedded": pp_tg.Figures(200, 30)}])
    assert block.ratios("embedded", "pp") == [0.9, 1.0] and block.ratios("embedded", "tg") == [0.9, 0.75]
