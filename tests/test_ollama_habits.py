"""Ollama users' habits (issue 29): ``model=name:tag`` as ``ollama run`` takes it, and num_gpu on a CPU-only
server said once, through the real ``python -m sweep`` against the stand-in and the embedded engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.multirun.shorthands import model_names
from sweep.testing.standin import StandIn
from tests.sweep_cli import run_sweep, trials_of

NO_EFFECT = "note: num_gpu has no effect on"


@pytest.mark.parametrize(("arg", "rewritten"), [
    ("model=smollm2:135m", "model.name=smollm2:135m"),
    ("model=llama3.2", "model.name=llama3.2"),                          # not a file of conf/model/, no tag
    ("model=gemma3_270m,llama3.2:1b", "model.name=gemma3:270m,llama3.2:1b"),   # a group option by its name
    ("model=gemma3_270m", "model=gemma3_270m"),                          # a real group option: Hydra's
    ("model=gemma3,smollm2_135m", "model=gemma3,smollm2_135m"),
    ("model=choice(a:1,b:2)", "model=choice(a:1,b:2)"),                  # a sweep function: Hydra's
    ("model.name=x:y", "model.name=x:y"),
    ("chimera.num_gpu=80", "chimera.num_gpu=80"),
])
def test_model_names_rewrites_only_what_is_not_a_group_option(arg: str, rewritten: str) -> None:
    argv = ["sweep", "-m", arg, "trials=1"]
    note = model_names(argv)
    assert argv == ["sweep", "-m", rewritten, "trials=1"]
    assert (note is not None) == (arg != rewritten)
    if note:
        assert note.startswith(f"note: {arg} is not a config in conf/model/") and rewritten in note


def _ollama(standin: StandIn, root: Path, *args: str) -> tuple[str, ...]:
    return ("backend=ollama", f"backend.base_url={standin.base_url}", f"output_root={root}", "trials=1",
            "warmup=0", "progress=false", "telemetry.enabled=false", *args)


def test_model_name_with_a_tag_runs_as_model_name(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep(*_ollama(standin, tmp_path, "model=llama3.1:8b-instruct-q4_0"))
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: model=")]
    assert notes == ["note: model=llama3.1:8b-instruct-q4_0 is not a config in conf/model/ (gemma3, gemma3_270m, "
                     "llama3_1_8b_q4, smollm2_135m): taken as model.name=llama3.1:8b-instruct-q4_0, the name the "
                     "server knows"]
    rows = trials_of(tmp_path)
    assert set(rows["model"]) == {"llama3.1:8b-instruct-q4_0"} and (rows["status"] == "ok").all()


def test_a_group_option_is_composed_as_before(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep(*_ollama(standin, tmp_path, "model=gemma3"))
    assert result.returncode == 0, result.stderr
    assert "note: model=" not in result.stderr
    assert set(trials_of(tmp_path)["model"]) == {"gemma3:latest"}


def test_an_unknown_model_is_still_one_line_naming_the_fix(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep(*_ollama(standin, tmp_path, "model=nosuch:1b"))
    assert result.returncode == 2
    assert "nosuch:1b" in result.stderr.splitlines()[-1]
    assert not any("/api/generate" in hit or "/api/chat" in hit for hit in standin.hits)   # nothing measured


@pytest.mark.parametrize(("vram", "said"), [(0.0, 1), (1.0, 0)])
def test_num_gpu_on_a_cpu_only_server_is_said_once(standin: StandIn, tmp_path: Path, vram: float, said: int) -> None:
    standin.vram_fraction = vram                           # /api/ps: size_vram = size × this
    result = run_sweep("-m", *_ollama(standin, tmp_path, "model=gemma3", "chimera.num_gpu=40,80,120"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(NO_EFFECT)]
    assert len(lines) == said, result.stderr
    if said:
        assert lines[0].startswith("note: num_gpu has no effect on this server: it runs on the CPU only "
                                   "(GET /api/ps: gemma3:latest loaded with size_vram 0 although num_gpu=40)")
    assert len(trials_of(tmp_path)) == 3


def test_the_dry_run_of_the_embedded_engine_says_it_once_and_sends_nothing(tmp_path: Path) -> None:
    result = run_sweep("-m", "chimera.num_gpu=0,40,99", f"output_root={tmp_path}", "dry_run=true")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert out.count(NO_EFFECT) == 1
    assert "num_gpu has no effect on the embedded engine: it runs on the CPU only" in result.stdout
    assert list(tmp_path.iterdir()) == []
    plain = run_sweep("-m", "chimera.num_ctx=512,1024", "chimera.num_gpu=null", f"output_root={tmp_path}",
                      "dry_run=true")
    assert plain.returncode == 0, plain.stderr
    assert NO_EFFECT not in plain.stdout + plain.stderr            # no cell sends num_gpu: nothing to say


def test_model_smollm2_tag_runs_on_the_embedded_engine(tmp_path: Path) -> None:
    result = run_sweep("model=smollm2:135m", f"output_root={tmp_path}", "trials=1", "warmup=0",
                       "chimera.num_predict=4", "progress=false", "telemetry.enabled=false", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "taken as model.name=smollm2:135m" in result.stderr
    assert result.stderr.count(NO_EFFECT) == 1                     # the chimera preset sends num_gpu=80
    rows = trials_of(tmp_path)
    assert set(rows["model"]) == {"smollm2:135m"} and (rows["status"] == "ok").all()
    assert (rows["prompt_tokens_per_s"] == rows["prompt_eval_count"] / (rows["prompt_eval_duration_ms"] / 1000)).all()
