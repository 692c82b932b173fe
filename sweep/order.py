"""In which order the cells of one job are visited: ``order=blocked | interleaved | random``.

Why: cells run one after the other (``blocked``) put slow drift — thermals,
background load, a cache warming up — on whichever cell ran last; the demo's
"significant" num_ctx × num_thread interaction was exactly that.  Spreading
each cell's trials over *rounds* and visiting the cells in a fresh random
order every round (``random``), or alternating them (``interleaved``, A B A B),
lets drift hit every arm alike.

A *round* holds one trial (per prompt) of every cell still running.  The order
of round ``r`` under ``random`` is a permutation drawn from
``numpy.random.default_rng([order_seed, r])``: the same seed gives the same
order, independent of how many cells stopped early (``trials=auto``).

This is the order inside one job, and the order of a multirun's jobs: there
the reload-aware sweeper (:mod:`hydra_plugins.chimera_sweep.reload_aware_sweeper`)
runs one batch of jobs per round, a job per cell in :func:`round_order`'s
order, each measuring that round only (:mod:`sweep.multirun.rounds`); ``blocked`` keeps
one job per cell, grouped by model loads.  :func:`resolve` decides the default
for both, over the job's or the whole multirun's cells.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from sweep.config import Order

T = TypeVar("T")

def resolve(order: Order | None, presets: Sequence[str], seed: int | None) -> tuple[Order, int]:
    """The order to run and its seed: ``None`` → random when the job compares a baseline with chimera cells.

    A seed that is not given is drawn here, so it can be recorded in the provenance
    and the same order replayed with ``order_seed=<it>``.
    """
    if order is None:
        order = Order.random if {"baseline", "chimera"} <= {p.lower() for p in presets} else Order.blocked
    return order, seed if seed is not None else secrets.randbelow(2**31)


def round_order(items: Sequence[T], order: Order, seed: int, rnd: int) -> list[T]:
    """The items (the cells still running) in the order round ``rnd`` visits them."""
    if order == Order.random:
        perm = np.random.default_rng([seed, rnd]).permutation(len(items))
        return [items[i] for i in perm]
    return list(items)
