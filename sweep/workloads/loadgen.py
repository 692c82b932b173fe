"""The pure half of ``workload=load``: arrival times, the SLO test, goodput, and the knee's bisection.

Why pure: the timing path (:mod:`sweep.workloads.load`) only sleeps until each scheduled time and
sends; what is scheduled, what counts as good and which level to try next are decided here, with
no clock and no socket, so tests check them on hand-computed values and generated data.

Knee search (``load.rates=sweep``), a level being a rate (req/s) or a concurrency:

1. *bracket*: run at ``low``; while a level passes (its goodput fraction ≥ ``slo.fraction``) double it,
   at most ``high``.  ``low`` failing ends the search (``below_low``: no capacity); ``high`` passing
   ends it too (``at_high``: the capacity is at least ``high``).  Doubling, not starting at ``high``:
   an overloaded run's backlog drains for as long as it grew, so the search never offers more than
   twice a level that passed.
2. *bisect*: try the middle of (highest passing, lowest failing) until the bracket is narrower than
   ``tolerance`` × its passing end (a concurrency: until the two are adjacent integers).

The capacity is the highest passing level: with a goodput fraction that falls as the level rises,
the true knee lies in [capacity, capacity × (1 + tolerance)).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sweep.cells import Cell, ConfigError, LoadPlan, Trial
from sweep.config import Arrivals, LoadConfig, Loop, Rates, SloConfig
from sweep.contract import Status, TrialRecord

CONSTANT, POISSON = Arrivals.constant, Arrivals.poisson
OPEN, CLOSED = Loop.open, Loop.closed
BRACKETED, BELOW_LOW, AT_HIGH = "bracketed", "below_low", "at_high"
DEFAULT_DURATION_S = 10.0
#: A knee search's runs, when neither load.duration_s nor load.requests is given, are this many requests
#: each: a fixed duration would judge a low rate on a handful of requests (0.1 req/s for 10 s is one),
#: where one slow request decides the level; 20 requests let slo.fraction=0.9 tolerate two.
DEFAULT_SEARCH_REQUESTS = 20


def arrival_offsets_s(rate: float, arrivals: Arrivals, seed: Sequence[int], *, duration_s: float | None = None,
                      requests: int | None = None) -> list[float]:
    """Scheduled send times (seconds from the run's start) of an open-loop run: the first at 0.

    ``constant``: every 1/rate; ``poisson``: exponential gaps of mean 1/rate drawn from ``seed``
    (numpy's generator seeded by the sequence, e.g. (load.seed, trial, step): each run its own draw,
    the same draw on a re-run).  Either the arrivals before ``duration_s`` or the first ``requests``.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if (duration_s is None) == (requests is None):
        raise ValueError("give exactly one of duration_s and requests")
    mean_gap = 1.0 / rate
    if arrivals == CONSTANT:
        n = requests if requests is not None else math.ceil(duration_s * rate - 1e-9)
        return [k * mean_gap for k in range(n)]
    if arrivals != POISSON:
        raise ValueError(f"arrivals must be one of {', '.join(Arrivals)}, got {arrivals!r}")
    rng = np.random.default_rng(list(seed))
    if requests is not None:
        gaps = rng.exponential(mean_gap, size=max(0, requests - 1))
        return [0.0, *np.cumsum(gaps).tolist()][:requests]
    offsets, t = [], 0.0
    while t < duration_s:
        offsets.append(t)
        t += float(rng.exponential(mean_gap))
    return offsets


def slo_met(record: TrialRecord, plan: LoadPlan) -> bool:
    """The request succeeded and met every limit set (a request with no ITL, one chunk, meets the ITL limit)."""
    if record.status != Status.OK:
        return False
    checks = ((plan.slo_ttft_ms, record.ttft_ms, False), (plan.slo_itl_ms, record.itl_ms_mean, True),
              (plan.slo_e2e_ms, record.e2e_ms, False))
    for limit, value, missing_ok in checks:
        if limit is None:
            continue
        if value is None:
            if not missing_ok:
                return False
        elif value > limit:
            return False
    return True


def goodput_fraction(good: Sequence[bool]) -> float:
    """Share of a run's requests that were good (failed ones count as not good); 0 for an empty run."""
    return sum(bool(g) for g in good) / len(good) if good else 0.0


def goodput_per_s(good: Sequence[bool], run_s: float) -> float:
    """Good requests per second of the run (its start → its last response)."""
    return sum(bool(g) for g in good) / run_s if run_s > 0 else float("nan")


@dataclass
class Bisection:
    """The knee search's state: feed it each level's pass/fail, ask it for the next level (None: done)."""

    low: float
    high: float
    tolerance: float
    integer: bool = False                     # a concurrency: whole numbers, stop when adjacent
    passing: float | None = None              # the highest level that passed
    failing: float | None = None              # the lowest level that failed
    tried: list[tuple[float, bool]] = field(default_factory=list)

    def next_level(self) -> float | None:
        """The level to run next, or None when the search is over."""
        if not self.tried:
            return self.low
        if self.failing is None:              # still doubling
            last = self.tried[-1][0]
            return None if last >= self.high else min(last * 2, self.high)
        if self.passing is None:              # low failed
            return None
        gap = self.failing - self.passing
        if (gap <= 1) if self.integer else (gap <= self.tolerance * self.passing):
            return None
        mid = (self.passing + self.failing) / 2
        return float(math.floor(mid)) if self.integer else mid

    def record(self, level: float, passed: bool) -> None:
        """What the run at ``level`` showed."""
        self.tried.append((level, passed))
        if passed:
            self.passing = level
        else:
            self.failing = level

    @property
    def knee(self) -> str:
        """``bracketed``, ``below_low`` (nothing passed) or ``at_high`` (nothing failed: a lower bound)."""
        if self.passing is None:
            return BELOW_LOW
        return AT_HIGH if self.failing is None else BRACKETED

    @property
    def capacity(self) -> float | None:
        """The highest passing level (None when even ``low`` failed)."""
        return self.passing


# ---------------------------------------------------------------- trials of a load cell


@dataclass(frozen=True)
class LoadTrial:
    """Trial ``trial`` of a load cell: one run at the cell's level, or one knee search."""

    trial: int
    warmup: bool = False

    def key(self) -> tuple[Any, ...]:
        return ("load", self.trial)


def load_trials(rnd: int) -> list[Trial]:
    """A round of a load cell: its one run (or knee search) numbered ``rnd``."""
    return [LoadTrial(rnd)]


def completed_load_trials(rows: Sequence[Mapping[str, Any]], cell_hash: str) -> set[int]:
    """Trials of a load cell stored complete: a knee search that reached its end (a row with ``load_knee``), or
    a finished fixed-level run (``load_step`` null) with a successful request.

    From the rows alone, so the job, the multirun's rounds and the sweep's summary count alike.  A run
    Ctrl-C interrupted stored its finished requests with ``load_run_s`` null: it is run again.
    """
    mine = [r for r in rows if r.get("cell_hash") == cell_hash and not r.get("warmup") and r.get("load_run_id")]
    return ({r["trial"] for r in mine if r.get("load_knee")}
            | {r["trial"] for r in mine if r.get("load_step") is None and r.get("status") == Status.OK
               and r.get("load_run_s") is not None})


def stored_load_keys(cell: Cell, rows: Sequence[Mapping[str, Any]]) -> set[Hashable]:
    """Keys of the load cell's trials stored complete (:func:`completed_load_trials`)."""
    return {("load", t) for t in completed_load_trials(rows, cell.cell_hash)}


def expected_requests(plan: LoadPlan) -> int:
    """Requests one run sends (an estimate for a closed loop held for a duration: one per level per second)."""
    if plan.requests is not None:
        return plan.requests
    duration = plan.duration_s if plan.duration_s is not None else DEFAULT_DURATION_S
    level = plan.level if plan.level is not None else plan.low
    return max(1, round(duration * level))


# ---------------------------------------------------------------- the config, checked


def load_plan(load: LoadConfig, slo: SloConfig, trials: int | None) -> LoadPlan:
    """The cell's :class:`~sweep.cells.LoadPlan` from ``load.*`` and ``slo.*``; :class:`ConfigError` (one line) if wrong.

    ``load.rates``, ``load.loop`` and ``load.arrivals`` are enums of the schema: Hydra refuses other values.
    """
    def positive(name: str, value: Any) -> None:
        if value is not None and not value > 0:
            raise ConfigError(f"invalid {name}={value}: must be > 0")

    if trials is None:
        raise ConfigError("trials=auto is not supported by workload=load: set trials=N (N runs, or N knee searches "
                          "for load.rates=sweep, whose capacities give the CI)")
    sweep = load.rates == Rates.sweep
    if load.rate is not None and load.concurrency is not None:
        raise ConfigError("load.rate and load.concurrency are both set: give load.rate=R (open loop) or "
                          "load.concurrency=C (closed loop), not both")
    loop = load.loop or (CLOSED if load.concurrency is not None else OPEN)
    if loop == OPEN and load.concurrency is not None or loop == CLOSED and load.rate is not None:
        raise ConfigError(f"load.loop={loop} does not use load.{'concurrency' if loop == OPEN else 'rate'}: "
                          "drop it or change load.loop")
    level = load.concurrency if loop == CLOSED else load.rate
    if not sweep and level is None:
        raise ConfigError("workload=load needs load.rate=R (requests per second, open loop) or load.concurrency=C "
                          "(requests in flight, closed loop), or load.rates=sweep to find the knee")
    if sweep and level is not None:
        raise ConfigError(f"load.rates=sweep searches the level itself: drop load.{'rate' if loop == OPEN else 'concurrency'} "
                          "(bounds: load.low, load.high)")
    if loop == CLOSED and level is not None and (isinstance(level, bool) or int(level) != level or level < 1):
        raise ConfigError(f"invalid load.concurrency={level}: must be a whole number >= 1")
    positive("load.rate", load.rate)
    if load.duration_s is not None and load.requests is not None:
        raise ConfigError("load.duration_s and load.requests are both set: a run lasts one or the other")
    positive("load.duration_s", load.duration_s)
    if load.requests is not None and load.requests < 1:
        raise ConfigError(f"invalid load.requests={load.requests}: must be >= 1")
    for key in ("ttft_ms", "itl_ms", "e2e_ms"):
        positive(f"slo.{key}", getattr(slo, key))
    if not 0 < slo.fraction <= 1:
        raise ConfigError(f"invalid slo.fraction={slo.fraction}: must be in (0, 1]")
    if sweep and all(getattr(slo, k) is None for k in ("ttft_ms", "itl_ms", "e2e_ms")):
        raise ConfigError("load.rates=sweep needs an SLO to find the knee: set slo.ttft_ms, slo.itl_ms and/or slo.e2e_ms")
    low = float(load.low) if load.low is not None else (1.0 if loop == CLOSED else 0.5)
    high = float(load.high) if load.high is not None else 64.0
    if not 0 < low <= high:
        raise ConfigError(f"invalid load.low={low:g} / load.high={high:g}: need 0 < low <= high")
    if loop == CLOSED and (low != int(low) or high != int(high)):
        raise ConfigError(f"load.low={low:g} / load.high={high:g} are concurrencies in a closed loop: whole numbers")
    if not 0 < load.tolerance < 1:
        raise ConfigError(f"invalid load.tolerance={load.tolerance}: must be in (0, 1)")
    return LoadPlan(loop=loop, arrivals=load.arrivals if loop == OPEN else CONSTANT,
                    level=float(level) if level is not None else None,
                    duration_s=load.duration_s if load.duration_s is not None or load.requests is not None
                    else None if sweep else DEFAULT_DURATION_S,
                    requests=load.requests if load.requests is not None or load.duration_s is not None or not sweep
                    else DEFAULT_SEARCH_REQUESTS, sweep=sweep, low=low, high=high, tolerance=float(load.tolerance),
                    seed=int(load.seed), slo_ttft_ms=slo.ttft_ms, slo_itl_ms=slo.itl_ms, slo_e2e_ms=slo.e2e_ms,
                    slo_fraction=float(slo.fraction))
