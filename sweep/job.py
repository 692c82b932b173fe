"""One Hydra job: config → cells → measured, stored trials.

Plain functions under the thin ``@hydra.main`` entry, so tests drive them with
Hydra's ``compose()``.  Bad configuration raises :class:`ConfigError` before
the first request; failing servers only ever produce rows.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from sweep import backends
from sweep.execute import CellOutcome, Policy, run_cell
from sweep.ollama import OllamaClient, headers_from_env
from sweep.plan import Cell, ConfigError, plan_cells
from sweep.records import TrialRecord
from sweep.store import CellStore, ensure_writable

console = Console(stderr=True, highlight=False, soft_wrap=True)
# httpx logs every request at INFO; the per-trial lines below say more, once.
logging.getLogger("httpx").setLevel(logging.WARNING)


def _trial_line(record: TrialRecord) -> str:
    kind = "warm-up" if record.warmup else "trial"
    if record.status != "ok":
        return f"    {kind} {record.trial} attempt {record.attempt}: [red]{record.status}[/] {record.error}"
    tps = f"{record.throughput_tok_s:.1f} tok/s" if record.throughput_tok_s else "- tok/s"
    ttft = f"TTFT {record.ttft_ms:.0f} ms" if record.ttft_ms is not None else "TTFT -"
    return f"    {kind} {record.trial} prompt {record.prompt_id}: {tps}, {ttft}, {record.eval_count} tokens"


def policy_from(backend: DictConfig) -> Policy:
    return Policy(request_timeout_s=backend.request_timeout_s, retries=backend.retries,
                  retry_backoff_s=backend.retry_backoff_s,
                  max_consecutive_failures=backend.max_consecutive_failures)


def _open_store(cell: Cell, sweep_dir: Path, resume: bool, provenance: dict[str, Any]) -> CellStore:
    store = CellStore(sweep_dir / f"{cell.file_stem}.parquet", provenance)
    if store.previous is not None and not resume:
        raise ConfigError(f"{store.path} already holds trials of this cell: add resume=true to continue "
                          "that sweep, or leave out sweep_id= to start a new one")
    return store


def run_job(cfg: DictConfig, sweep_dir: Path) -> list[CellOutcome]:
    """Measure every cell of this job into ``sweep_dir``."""
    cells = plan_cells(cfg)
    ensure_writable(sweep_dir)
    base_url = backends.base_url_for(cfg.backend)
    b = cfg.backend
    client = OllamaClient(base_url, connect_timeout_s=b.connect_timeout_s, stall_timeout_s=b.stall_timeout_s,
                          headers=headers_from_env(b.api_key_env, b.headers_env))
    outcomes = []
    with client:
        server_version = client.version()
        served = [m.get("name", "") for m in client.tags()] if b.kind == "embedded" else []
        for cell in cells:
            client.show(cell.model, missing_hint=backends.missing_model_hint(b, served) or None)
        provenance = {"sweep_id": cfg.sweep_id, "server_version": server_version, "command": sys.argv,
                      "config": OmegaConf.to_container(cfg, resolve=True)}
        for cell in cells:
            store = _open_store(cell, sweep_dir, cfg.resume, provenance)
            console.print(f"[bold]cell[/] {cell.cell_id}  → {store.path.name}")
            outcome = run_cell(client, cell, store, sweep_id=cfg.sweep_id, trials=cfg.trials,
                               warmup=cfg.warmup, policy=policy_from(b),
                               on_record=lambda r: console.print(_trial_line(r)))
            outcomes.append(outcome)
            state = "abandoned" if outcome.abandoned else ("complete" if outcome.complete else "incomplete")
            console.print(f"  {outcome.measured_ok}/{outcome.expected} trials ok, "
                          f"{outcome.failed_attempts} failed attempts, {state}")
    return outcomes
