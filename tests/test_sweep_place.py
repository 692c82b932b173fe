"""How ``sweep_id`` is decided when the config leaves it open, and that every job gets the one answer.

The end-to-end forms (``hydra.sweep.dir=X``, ``output_root=``, experiment files, resume) run
through the real CLI in tests/test_layout.py; here the resolver and Hydra's cache copy on
hand-made directories.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sweep.config import new_sweep_id, register

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _compose(*overrides: str):
    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_a_directory_given_directly_names_the_sweep(tmp_path: Path) -> None:
    assert new_sweep_id(str(tmp_path), True, "given") == "given"
    cfg = _compose(f"hydra.run.dir={tmp_path / 'mine'}", f"output_root={tmp_path}")
    assert cfg.sweep_id == "mine"


def test_resume_takes_the_newest_sweep_that_holds_trials(tmp_path: Path) -> None:
    for name, age in (("old", 100), ("new", 200)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "c.parquet").write_bytes(b"")
        os.utime(tmp_path / name, (1e9 + age, 1e9 + age))
    (tmp_path / "empty").mkdir()                       # newest, but nothing to resume
    assert new_sweep_id(str(tmp_path), True, "") == "new"
    assert new_sweep_id(str(tmp_path / "none"), True, "") != "new"    # nothing there: a new sweep


def test_a_new_sweep_never_takes_an_existing_name(tmp_path: Path) -> None:
    first = new_sweep_id(str(tmp_path), False, "")
    assert re.fullmatch(r"\d{8}-\d{6}", first)
    (tmp_path / first).mkdir()
    (tmp_path / f"{first}-2").mkdir()
    second = new_sweep_id(str(tmp_path), False, "")
    assert second != first and not (tmp_path / second).exists()   # -3, or a later second's stamp


def test_every_job_config_reads_the_answer_the_first_config_cached(tmp_path: Path) -> None:
    """What Hydra does for each job (load_sweep_config copies the first config's resolver cache)."""
    first = _compose(f"output_root={tmp_path}")
    decided = first.sweep_id
    (tmp_path / decided).mkdir()                        # taken now: a fresh resolution would pick another
    job = _compose(f"output_root={tmp_path}", "chimera.num_ctx=512")
    OmegaConf.copy_cache(from_config=first, to_config=job)
    assert job.sweep_id == decided and Path(job.hydra.run.dir) == tmp_path / decided
    assert _compose(f"output_root={tmp_path}").sweep_id != decided


def test_the_resume_hint_names_a_sweep_id_the_config_left_open(tmp_path: Path) -> None:
    from sweep.multirun.layout import Place

    argv = ["-m", "trials=3"]
    assert Place(tmp_path / "20261207-010203", False, True).resume_args(argv) == [*argv, "sweep_id=20261207-010203"]
    assert Place(tmp_path / "mine", False, False).resume_args([*argv, "sweep_id=mine"]) == [*argv, "sweep_id=mine"]
