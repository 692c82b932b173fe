"""Hydra-native directories: wherever the user points Hydra, the trials land there, in one directory.

Each way of choosing the place is run end to end (``python -m sweep`` against the
stand-in): ``hydra.sweep.dir=X``, ``hydra.run.dir=X``, ``output_root=``,
``++output_root=``, values in an experiment file, and a resume of each, which
must find the same directory and send nothing when the sweep is complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sweep.contract import HYDRA_DIR, cell_paths
from sweep.testing.standin import StandIn
from tests.sweep_cli import run_sweep


def _common(standin: StandIn) -> list[str]:
    return ["backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3", "trials=1", "warmup=0"]


def _only_trials_and_private(directory: Path) -> None:
    """Trials at the top, everything else under a ``_``/``.`` name; a plain Parquet read sees only trials."""
    stray = [p.name for p in directory.iterdir() if not p.name.startswith(("_", ".")) and p.suffix != ".parquet"]
    assert stray == []
    assert len(pd.read_parquet(directory)) >= 1


def test_hydra_sweep_dir_holds_the_trials_of_a_multirun(standin: StandIn, tmp_path: Path) -> None:
    target = tmp_path / "t" / "sw"
    result = run_sweep("-m", *_common(standin), "chimera.num_ctx=256,512", f"hydra.sweep.dir={target}")
    assert result.returncode == 0, result.stderr
    assert len(cell_paths(target)) == 2
    assert list((tmp_path / "t").iterdir()) == [target]           # not the parent, as it used to be
    assert (target / HYDRA_DIR / "multirun.yaml").is_file()
    assert sorted(p.name for p in (target / HYDRA_DIR).iterdir() if p.is_dir()) == ["0", "1"]
    _only_trials_and_private(target)
    df = pd.read_parquet(target)
    assert df["sweep_id"].unique().tolist() == ["sw"]              # the directory names the sweep


def test_hydra_run_dir_holds_the_trials_of_a_single_run(standin: StandIn, tmp_path: Path) -> None:
    target = tmp_path / "one"
    result = run_sweep(*_common(standin), f"hydra.run.dir={target}")
    assert result.returncode == 0, result.stderr
    assert len(cell_paths(target)) == 1
    assert (target / HYDRA_DIR / "config.yaml").is_file()         # Hydra's files in the subfolder
    _only_trials_and_private(target)


@pytest.mark.parametrize("form", ["output_root={}", "++output_root={}", "+output_root={}"])
def test_every_form_of_output_root_is_honoured(standin: StandIn, tmp_path: Path, form: str) -> None:
    if form.startswith("+output_root"):
        result = run_sweep(*_common(standin), form.format(tmp_path))
        assert result.returncode == 2 and "error:" in result.stderr   # `+` adds a key; this one exists
        return
    result = run_sweep("-m", *_common(standin), "chimera.num_ctx=256,512", form.format(tmp_path), "sweep_id=fixed")
    assert result.returncode == 0, result.stderr
    assert len(cell_paths(tmp_path / "fixed")) == 2


def test_output_root_and_sweep_id_from_an_experiment_file(standin: StandIn, tmp_path: Path) -> None:
    configs = tmp_path / "configs" / "experiment"
    configs.mkdir(parents=True)
    root = tmp_path / "from-file"
    (configs / "placed.yaml").write_text(f"# @package _global_\noutput_root: {root}\nsweep_id: placed\n")
    args = ("-m", "--config-dir", str(tmp_path / "configs"), "+experiment=placed", *_common(standin),
            "chimera.num_ctx=256,512")
    result = run_sweep(*args)
    assert result.returncode == 0, result.stderr
    assert len(cell_paths(root / "placed")) == 2
    sent = len(standin.requests)
    again = run_sweep(*args, "resume=true")
    assert again.returncode == 0, again.stderr
    assert len(standin.requests) == sent                           # complete: the resume sends nothing


def test_output_root_in_an_experiment_file_gets_a_pinned_id(standin: StandIn, tmp_path: Path) -> None:
    """A timestamp id with the root set in a file: both jobs still write into one directory."""
    configs = tmp_path / "configs" / "experiment"
    configs.mkdir(parents=True)
    root = tmp_path / "rooted"
    (configs / "rooted.yaml").write_text(f"# @package _global_\noutput_root: {root}\n")
    result = run_sweep("-m", "--config-dir", str(tmp_path / "configs"), "+experiment=rooted", *_common(standin),
                       "chimera.num_ctx=256,512")
    assert result.returncode == 0, result.stderr
    (sweep,) = [p for p in root.iterdir()]
    assert len(cell_paths(sweep)) == 2


def test_resume_of_a_hydra_sweep_dir_finds_it_and_sends_nothing(standin: StandIn, tmp_path: Path) -> None:
    target = tmp_path / "sw"
    args = ("-m", *_common(standin), "chimera.num_ctx=256,512", f"hydra.sweep.dir={target}")
    assert run_sweep(*args).returncode == 0
    sent = len(standin.requests)
    again = run_sweep(*args, "resume=true")
    assert again.returncode == 0, again.stderr
    assert len(standin.requests) == sent
    assert pd.read_parquet(target)["sweep_id"].unique().tolist() == ["sw"]


def test_a_pinned_key_cannot_be_swept(tmp_path: Path) -> None:
    result = run_sweep("-m", f"output_root={tmp_path}/a,{tmp_path}/b")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: output_root cannot take several values in one sweep: run one sweep per value")


def test_an_experiment_that_runs_too_few_cells_names_the_right_number(standin: StandIn, tmp_path: Path) -> None:
    configs = tmp_path / "configs" / "experiment"
    configs.mkdir(parents=True)
    (configs / "short.yaml").write_text(
        "# @package _global_\ngrid:\n  baseline: true\n  axes:\n    num_ctx: [256, 512]\n    num_thread: [1, 2]\n"
        "hydra:\n  sweeper:\n    params:\n      cell: range(0,4)\n")
    result = run_sweep("-m", "--config-dir", str(configs.parent), "+experiment=short", *_common(standin),
                       f"output_root={tmp_path / 'out'}")
    assert result.returncode == 2
    assert "this grid has 5 cells" in result.stderr and "cell=range(0,5)" in result.stderr
    assert standin.requests == []


def test_the_shipped_experiments_count_their_cells(compose_cfg) -> None:
    """quickstart and tr111 keep range(0,N) by hand: N must be the grid's size."""
    from omegaconf import OmegaConf

    from sweep.config import typed
    from sweep.plan import grid_size

    for name in ("quickstart", "tr111"):
        cfg = compose_cfg(f"+experiment={name}")
        text = (Path(__file__).resolve().parent.parent / "conf" / "experiment" / f"{name}.yaml").read_text()
        assert f"cell: range(0,{grid_size(typed(cfg))})" in text, name
        assert OmegaConf.select(cfg, "grid.axes") is not None


def test_rescue_path_is_per_sweep(tmp_path: Path) -> None:
    """Two sweeps whose directories fail mid-run never share a rescue folder."""
    from sweep.store import rescue_path

    a = rescue_path(tmp_path / "x" / "cell.parquet", "sweep-a")
    b = rescue_path(tmp_path / "x" / "cell.parquet", "sweep-b")
    assert a != b and a.parent.name == "sweep-a" and a.name == "cell.parquet"


def test_a_multirun_job_saves_no_hydra_files_and_its_provenance_holds_its_config(standin: StandIn,
                                                                                  tmp_path: Path) -> None:
    """Hydra's per-job config.yaml/hydra.yaml/overrides.yaml are not written; _run.json has each job's config."""
    target = tmp_path / "sw"
    result = run_sweep("-m", *_common(standin), "chimera.num_ctx=256,512", f"hydra.sweep.dir={target}")
    assert result.returncode == 0, result.stderr
    assert [p for p in (target / HYDRA_DIR).rglob("*") if p.is_file()] == [target / HYDRA_DIR / "multirun.yaml"]
    run = json.loads((target / "_run.json").read_text())
    by_ctx = {c["config"]["chimera"]["num_ctx"]: c for c in run["cells"].values()}
    assert sorted(by_ctx) == [256, 512]
    for num_ctx, cell in by_ctx.items():
        assert f"chimera.num_ctx={num_ctx}" in cell["overrides"] and "backend=ollama" in cell["overrides"]
    again = run_sweep("-m", *_common(standin), "chimera.num_ctx=256,512", f"hydra.sweep.dir={tmp_path / 'kept'}",
                      "hydra.output_subdir=_hydra")   # asked for: every job keeps Hydra's files
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "kept" / HYDRA_DIR).glob("*/_hydra/config.yaml"))) == 2
