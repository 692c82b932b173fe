"""``python -m sweep`` end to end against the stand-in: Hydra multirun → Parquet rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from sweep.contract import COLUMN_NAMES, PROVENANCE_KEY
from sweep.testing.standin import StandIn
from tests.sweep_cli import only_sweep, run_sweep, trials_of


def test_multirun_over_num_gpu_writes_one_parquet_per_cell(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep("-m", "backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
                       "chimera.num_gpu=60,80,100", "trials=2", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    sweep_dir = only_sweep(tmp_path)
    assert len(list(sweep_dir.glob("*.parquet"))) == 3
    df = pd.read_parquet(sweep_dir)                       # Hydra's files under _hydra/ are ignored
    assert list(df.columns) == list(COLUMN_NAMES)
    assert len(df) == 3 * (1 + 2)
    assert sorted(df["num_gpu"].unique()) == [60, 80, 100]
    assert df["status"].eq("ok").all() and df["sweep_id"].nunique() == 1
    assert df.groupby("cell_id")["warmup"].sum().eq(1).all()
    assert df["cell_hash"].nunique() == 3 and df["base_url"].eq(standin.base_url).all()
    assert df["throughput_tok_s"].gt(0).all() and df["ttft_ms"].gt(0).all()
    assert "complete" in result.stderr and f"python -m analysis {sweep_dir}" in result.stderr
    sent = [r["options"]["num_gpu"] for r in standin.requests]
    assert sorted(set(sent)) == [60, 80, 100] and len(sent) == 9


def test_baseline_cells_store_unset_options_as_null(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep("backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
                       "chimera=baseline", "trials=1", "warmup=0", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    assert df["preset"].tolist() == ["baseline"]
    assert df[["num_gpu", "num_ctx", "temperature", "top_p", "top_k", "repeat_penalty", "seed"]].isna().all().all()
    assert "options" not in standin.requests[0]


def test_twelve_cell_grid(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep("-m", "backend=ollama", f"backend.base_url={standin.base_url}",
                       "model=gemma3,llama3_1_8b_q4", "chimera.num_ctx=256,512,1024",
                       "chimera.temperature=0.6,0.8", "trials=1", "warmup=0", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    assert df["cell_hash"].nunique() == 12 and len(df) == 12
    assert set(df["model"]) == {"gemma3:latest", "llama3.1:8b-instruct-q4_0"}


def test_experiment_grid_labels_baseline_and_chimera(standin: StandIn, tmp_path: Path) -> None:
    standin.models.append("gemma3:270m")
    result = run_sweep("-m", "+experiment=quickstart", "backend=ollama", f"backend.base_url={standin.base_url}",
                       "trials=1", "warmup=0", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    assert df.groupby("preset")["cell_hash"].nunique().to_dict() == {"baseline": 1, "chimera": 4}
    assert df["num_predict"].eq(64).all()


def test_missing_model_is_one_line_and_nonzero(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep("backend=ollama", f"backend.base_url={standin.base_url}", "model.name=nope:1b",
                       f"output_root={tmp_path}")
    assert result.returncode == 2
    assert f"error: model 'nope:1b' is not on {standin.base_url}: run 'ollama pull nope:1b'" in result.stderr
    assert "Traceback" not in result.stderr and standin.requests == []


def test_unreachable_server_is_one_line_and_nonzero(tmp_path: Path) -> None:
    with StandIn() as gone:
        url = gone.base_url
    result = run_sweep("backend=ollama", f"backend.base_url={url}", f"output_root={tmp_path}")
    assert result.returncode == 2
    assert f"error: cannot reach the server at {url}" in result.stderr and "Traceback" not in result.stderr


def test_wrong_type_fails_in_hydra_before_any_request(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep("-m", "backend=ollama", f"backend.base_url={standin.base_url}", "chimera.num_ctx=abc",
                       f"output_root={tmp_path}")
    assert result.returncode != 0 and "num_ctx" in result.stderr
    assert standin.requests == []


def test_unwritable_output_dir_fails_before_measuring(standin: StandIn, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_sweep("backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
                       f"output_root={blocker}")
    assert result.returncode == 2
    assert standin.requests == []
    assert f"error: output directory '{blocker}' is not writable" in result.stderr
    assert "output_root=DIR" in result.stderr and "Traceback" not in result.stderr


def test_server_is_asked_about_each_model_once_per_sweep(standin: StandIn, tmp_path: Path) -> None:
    """Version, tags and a model's details cannot change between cells: asked per model, not per cell."""
    result = run_sweep("-m", "backend=ollama", f"backend.base_url={standin.base_url}",
                       "model=gemma3,llama3_1_8b_q4", "chimera.num_ctx=256,512", "trials=1", "warmup=0",
                       f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    inventory = [h for h in standin.hits if h.split()[1] in ("/api/version", "/api/tags", "/api/show")]
    assert sorted(inventory) == ["GET /api/tags"] * 2 + ["GET /api/version"] * 2 + ["POST /api/show"] * 2   # 4 cells
    sweep_dir = only_sweep(tmp_path)
    for cell in sweep_dir.glob("*.parquet"):   # each cell still records its own model's identity
        (part,) = cell.iterdir()
        meta = json.loads(pq.read_schema(part).metadata[PROVENANCE_KEY])
        assert list(meta["models"]) == [pq.read_table(part).column("model")[0].as_py()]
        assert meta["server"]["version"] == "0.12.3"


def test_a_model_missing_from_the_server_is_an_error_in_every_job(standin: StandIn, tmp_path: Path) -> None:
    """Known answers are reused, a missing model never is: the job that needs it stops the sweep."""
    result = run_sweep("-m", "backend=ollama", f"backend.base_url={standin.base_url}",
                       "model=gemma3,smollm2_135m", "trials=1", "warmup=0", f"output_root={tmp_path}")
    assert result.returncode == 2
    assert "is not on" in result.stderr and "smollm2" in result.stderr
