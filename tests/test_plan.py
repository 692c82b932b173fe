"""Config → cells: the grid, cell identity and the checks made before any request."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from sweep.cells import ConfigError, schedule
from sweep.config import typed
from sweep.multirun.cli_errors import one_line
from sweep.plan import plan_cells


def test_default_config_is_one_chimera_cell_on_the_embedded_gemma(compose_cfg) -> None:
    cfg = typed(compose_cfg())
    (cell,) = plan_cells(cfg)
    assert (cell.preset, cell.model, cell.backend) == ("chimera", "gemma3:270m", "embedded")
    assert dict(cell.options) == {"num_gpu": 80, "num_ctx": 512, "temperature": 0.8, "top_p": 0.9,
                                  "top_k": 40, "repeat_penalty": 1.1}
    assert cfg.trials == 3 and cfg.warmup == 1


def test_baseline_sends_no_options(compose_cfg) -> None:
    (cell,) = plan_cells(typed(compose_cfg("chimera=baseline")))
    assert cell.preset == "baseline" and dict(cell.options) == {}


def test_tr111_grid_is_baseline_plus_18_chimera_cells(compose_cfg) -> None:
    cells = plan_cells(typed(compose_cfg("+experiment=tr111")))
    assert len(cells) == 19
    assert cells[0].preset == "baseline" and dict(cells[0].options) == {}
    assert {c.preset for c in cells[1:]} == {"chimera"}
    assert {(c.options["num_gpu"], c.options["num_ctx"], c.options["temperature"]) for c in cells[1:]} == {
        (g, n, t) for g in (60, 80, 120) for n in (256, 512, 1024) for t in (0.6, 0.8)}
    assert all(c.options["top_p"] == 0.9 for c in cells[1:])      # the preset's values stay
    assert len({c.cell_hash for c in cells}) == 19
    assert cells[0].model == "gemma3:latest" and cells[0].backend == "ollama"
    (seventh,) = plan_cells(typed(compose_cfg("+experiment=tr111", "cell=7")))
    assert seventh == cells[7]


def test_quickstart_fixes_tokens_for_every_cell(compose_cfg) -> None:
    cells = plan_cells(typed(compose_cfg("+experiment=quickstart")))
    assert len(cells) == 5
    assert all(c.options["num_predict"] == 64 and c.options["seed"] == 42 for c in cells)
    assert dict(cells[0].options) == {"seed": 42, "num_predict": 64}


def test_cell_hash_follows_content_not_names(compose_cfg) -> None:
    a = plan_cells(typed(compose_cfg("chimera.num_ctx=1024")))[0]
    b = plan_cells(typed(compose_cfg("chimera.num_ctx=1024", "trials=7", "sweep_id=other")))[0]
    c = plan_cells(typed(compose_cfg("chimera.num_ctx=2048")))[0]
    assert a.cell_hash == b.cell_hash != c.cell_hash
    assert "/" not in a.file_stem and ".." not in a.file_stem


def test_schedule_warmups_first_then_trials_interleaving_prompts(compose_cfg, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("first\n\nsecond\n")
    (cell,) = plan_cells(typed(compose_cfg(f"workload.prompt_file={prompts}")))
    specs = schedule(cell, trials=2, warmup=1)
    assert [(s.warmup, s.trial, s.prompt.text) for s in specs] == [
        (True, 0, "first"), (False, 0, "first"), (False, 0, "second"), (False, 1, "first"), (False, 1, "second")]


def test_jsonl_prompt_file_keeps_ids(compose_cfg, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "intro", "prompt": "Say hi"}\n{"prompt": "Count"}\n')
    (cell,) = plan_cells(typed(compose_cfg(f"workload.prompt_file={prompts}")))
    assert [(p.id, p.text) for p in cell.prompts] == [("intro", "Say hi"), ("1", "Count")]


@pytest.mark.parametrize(("overrides", "message"), [
    (["trials=-1"], "invalid trials=-1"),
    (["warmup=-2"], "invalid warmup=-2"),
    (["chimera.num_ctx=-5"], "invalid option num_ctx=-5"),
    (["chimera.temperature=-0.1"], "invalid option temperature=-0.1"),
    (["chimera.top_p=1.5"], "invalid option top_p=1.5"),
    (["backend=ollama", "backend.base_url=ftp://host:1"], "invalid backend.base_url"),
    (["workload.prompt_file=/nonexistent/prompts.txt"], "prompt file"),
    (["+experiment=tr111", "cell=19"], "invalid cell=19"),
    (["+experiment=quickstart", "grid.axes.num_ctx=[big]"], "invalid option num_ctx='big'"),
    (["+experiment=quickstart", "+grid.axes.num_gpus=[1]"], "unknown grid option"),
    (["telemetry.interval_s=0"], "invalid telemetry.interval_s=0"),
])
def test_bad_values_fail_before_any_request(compose_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        plan_cells(typed(compose_cfg(*overrides)))


@pytest.mark.parametrize("override, allowed", [
    ("backend.kind=vllm", "embedded, llama_server, ollama, openai"),   # the files of conf/backend/
    ("backend.api=sse", "ollama, openai"),
    ("workload.kind=batch", "prompt, agent_report, multi_agent, load"),
    ("workload.endpoint=embeddings", "generate, chat, completions"),
    ("agent.postprocess=shout", "trim, none"),
    ("agents.workflow=dance", "report, prompt"),
    ("scenario.name=solo", "baseline_vs_chimera, chimera_homo, chimera_hetero"),
    ("objective.stat=max", "mean, median, p95"),
    ("state=frozen", "warm, cold, reload"),
    ("order=randm", "blocked, interleaved, random"),
    ("load.rates=fast", "sweep"),
    ("load.arrivals=bursty", "constant, poisson"),
    ("load.loop=half", "open, closed"),
])
def test_a_choice_key_outside_its_values_fails_in_hydra_naming_them(compose_cfg, override: str, allowed: str) -> None:
    with pytest.raises((HydraException, OmegaConfBaseException)) as info:
        compose_cfg(override)
    key, value = override.split("=")
    assert one_line(info.value) == f"invalid {key}={value!r}: choose one of {allowed}"


def test_a_choice_key_arrives_typed_and_reads_as_its_string(compose_cfg) -> None:
    from omegaconf import OmegaConf

    from sweep.config import BackendName, Order, State

    cfg = typed(compose_cfg("backend=ollama", "order=random", "state=cold"))
    assert (cfg.backend.kind, cfg.order, cfg.state) == (BackendName.ollama, Order.random, State.cold)
    assert cfg.backend.kind == "ollama" and f"{cfg.order}" == "random"
    assert "kind: ollama\n" in OmegaConf.to_yaml(compose_cfg("backend=ollama"))   # --cfg job reads as before


@pytest.mark.parametrize("overrides", [["chimera.num_ctx=abc"], ["chimera.num_gpu=1.5"], ["model=nope"],
                                       ["chimera.num_ctxx=5"]])
def test_wrong_types_and_unknown_keys_fail_in_hydra(compose_cfg, overrides: list[str]) -> None:
    with pytest.raises((HydraException, OmegaConfBaseException)):
        compose_cfg(*overrides)


def test_ollama_host_forms_are_normalised(compose_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:11500")
    (cell,) = plan_cells(typed(compose_cfg("backend=ollama")))
    assert cell.base_url == "http://127.0.0.1:11500"
