"""``dry_run=true``: the plan is printed, nothing is sent, nothing is started, no directory is made."""

from __future__ import annotations

from pathlib import Path

from sweep.testing.standin import StandIn
from tests.sweep_cli import run_sweep, trials_of


def _ollama(standin: StandIn, root: Path) -> list[str]:
    return ["backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3", f"output_root={root}"]


def test_dry_run_lists_every_cell_and_sends_nothing(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep("-m", *_ollama(standin, tmp_path), "chimera.num_ctx=512,1024", "chimera.temperature=0.6,0.8",
                       "trials=2", "chimera.num_predict=100", "dry_run=true")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "dry run: 4 cells" in out
    for ctx in (512, 1024):
        for temp in (0.6, 0.8):
            assert f"num_ctx={ctx} temperature={temp}" in out
    # num_ctx is a load-time option: the order 512,512,1024,1024 implies two model loads
    assert "12 requests (8 measured trials + 4 warm-ups), 2 model loads, 0 cells already complete" in out
    # 12 requests × (0.3 s + 100 tokens / 30 tok/s) + 2 loads × 2 s = 47.6 s, stated with its assumptions
    assert "estimated duration: 48 s (assumed 30 tok/s" in out
    assert "nothing was sent; run it with: python -m sweep -m backend=ollama" in out
    assert standin.hits == [] and list(tmp_path.iterdir()) == []


def test_dry_run_with_resume_shows_what_is_already_measured(standin: StandIn, tmp_path: Path) -> None:
    first = run_sweep("-m", *_ollama(standin, tmp_path), "chimera.num_ctx=512", "trials=2", "warmup=0")
    assert first.returncode == 0, first.stderr
    hits = len(standin.hits)
    (sweep,) = [p.name for p in tmp_path.iterdir()]
    result = run_sweep("-m", *_ollama(standin, tmp_path), "chimera.num_ctx=512,1024", "trials=2", "warmup=0",
                       "resume=true", "dry_run=true")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "num_ctx=" in line and "│" in line]
    assert len(rows) == 2 and "2/2" in rows[0] and "2/2" not in rows[1]
    assert f"dry run: 2 cells → {tmp_path / sweep}" in result.stdout
    assert "2 requests (2 measured trials + 0 warm-ups), 2 model loads, 1 cells already complete" in result.stdout
    assert len(standin.hits) == hits   # the dry run sent nothing


def test_dry_run_of_the_embedded_backend_starts_no_server(tmp_path: Path) -> None:
    result = run_sweep("-m", "+experiment=quickstart", f"output_root={tmp_path}", "dry_run=true")
    assert result.returncode == 0, result.stderr
    assert "dry run: 5 cells" in result.stdout and "baseline" in result.stdout
    assert "embedded" not in result.stderr and list(tmp_path.iterdir()) == []


def test_a_bad_value_in_a_later_job_stops_the_multirun_before_any_request(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep("-m", *_ollama(standin, tmp_path), "chimera.top_p=0.5,7")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: invalid option top_p=7.0: must be between 0 and 1"
    assert standin.hits == []


def test_dry_run_counts_every_agents_calls(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep("-m", *_ollama(standin, tmp_path), "workload=multi_agent", "agents.count=2,4", "trials=3",
                       "dry_run=true")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # 2 agents: 3 concurrent runs × 2 agents + 2 × 3 isolated runs = 12 workflows × 2 calls; warm-up 1 run × 2 × 2
    assert "chimera_homo agents=2" in out and "4+24" in out
    assert "chimera_homo agents=4" in out and "8+48" in out
    assert "84 requests (72 measured trials + 12 warm-ups)" in out
    assert standin.hits == []


def test_dry_run_of_a_cold_sweep_plans_no_warm_ups_as_the_run_does_none(standin: StandIn, tmp_path: Path) -> None:
    sweep = ["-m", *_ollama(standin, tmp_path), "chimera.num_ctx=512,1024", "trials=2", "state=cold"]
    dry = run_sweep(*sweep, "dry_run=true")
    assert dry.returncode == 0, dry.stderr
    # every measured trial loads the model (it is unloaded before each one): 4 loads, not 2 for 2 num_ctx values
    assert "4 requests (4 measured trials + 0 warm-ups), 4 model loads" in dry.stdout and "0+2" in dry.stdout
    ran = run_sweep(*sweep)
    assert ran.returncode == 0, ran.stderr
    rows = trials_of(tmp_path)
    assert not rows["warmup"].any() and len(rows) == 4 and rows["reloaded"].all()
