"""The run layer's side of the cache: the per-item record of every cached Piper of a run.

    where a Worker runs (papy._worker TimedCall/BoxingCall, papy._fuse FusedCall), after
    each batch:  carry(record, values, raised)
        one result of the batch becomes Counted(delta, result): the RecordDelta taken
        from the cached Worker's record (a fused call: one delta per stage, a tuple)
                         |  travels with the results (pickled: processes, remote hosts)
                         v
    the parent, settling the batch (papy._settle): count_carried(node, counted)
        adds the deltas to the node's counts; logs the warnings raised in other processes
    items the Worker never saw, counted by the run layer itself:
        an item a fused group's earlier stage failed (StagesFailed): upstream_failed for
        the cached stages that read it (count_skipped); an error in place of a result (a
        timeout, a worker lost, a BaseException of the function): failed (count_lost)

    node.cache_counts (made by cache_counts_of, one dict per cached Piper of the node)
        --read by--> plumber.stats['cache'] (cache_stats), the summary (summary_lines)

The counts are written by the scheduler thread only (settle runs there) and read by anyone
as plain numbers. Every item that reaches a cached Piper is counted once: ``executed``
(computed), ``cached`` (served from the cache), ``failed`` (its function, or the cache's
``key=``, gave an error, or the pool lost it) or ``upstream_failed`` (it held an error
item, passed on without a lookup). One edge is counted twice: an item whose result was
computed (executed) but could not be pickled back to the parent (failed there too).
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._nodes import Node
    from ._piper import Piper
    from ._run import Run

log = logging.getLogger(__name__)

__all__ = ["Counted", "record_of", "carry", "carry_stages", "count_carried", "count_skipped", "count_lost",
           "cache_counts_of", "cache_stats", "summary_lines"]

OUTCOMES = ("executed", "cached", "failed", "upstream_failed")


class Counted:
    """A result that also carries the cache record's deltas of the Worker(s) that made it:
    a RecordDelta, or for a fused call a tuple with one (or None) per stage."""

    __slots__ = ("deltas", "value")

    def __init__(self, deltas: Any, value: Any):
        self.deltas, self.value = deltas, value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Counted, (self.deltas, self.value))


def record_of(worker: Any) -> Any:
    """The cache record of a cached Worker given to a new call object (a new run here, or
    a copy that arrived in a worker), its index marked stale; None for any other."""
    cached = getattr(worker, "_cached", None)
    return None if cached is None else cached.fresh()


def _carrier(values: list[Any], raised: dict[int, BaseException] | None) -> int:
    """The position that carries the deltas: the last one that holds a result (-1: none;
    the deltas stay in the record and go with the next batch)."""
    position = len(values) - 1
    while raised and position >= 0 and position in raised:
        position -= 1
    return position


def carry(record: Any, values: list[Any], raised: dict[int, BaseException] | None) -> None:
    """Where the Worker runs: wrap one result of the batch with the record's delta."""
    position = _carrier(values, raised)
    if position >= 0:
        delta = record.take()
        if delta is not None:
            values[position] = Counted(delta, values[position])


def carry_one(record: Any, result: Any) -> Any:
    """The per-item calls (an IMap's tracked mode): the result, with the delta if any."""
    delta = record.take()
    return result if delta is None else Counted(delta, result)


def carry_stages(records: list[Any], values: list[Any],
                 raised: dict[int, BaseException] | None) -> None:
    """A fused call: one delta per stage (None for a stage without a cache)."""
    position = _carrier(values, raised)
    if position >= 0:
        deltas = tuple(None if r is None else r.take() for r in records)
        if any(d is not None for d in deltas):
            values[position] = Counted(deltas, values[position])


# -- the parent ----------------------------------------------------------------------------
def cache_counts_of(pipers: tuple[Piper, ...]) -> dict[int, dict[str, int]]:
    """``{id(piper): {'executed': 0, ...}}`` for the cached Pipers of a node."""
    return {id(p): dict.fromkeys(OUTCOMES, 0) for p in pipers
            if getattr(p.worker, "cache", None) is not None}


def count_carried(node: Node, counted: Counted) -> Any:
    """Add what ``counted`` carries to the node's counts; the result it wraps."""
    deltas = counted.deltas
    if type(deltas) is tuple:
        for piper, delta in zip(node.pipers, deltas):
            if delta is not None:
                _add(node, piper, delta)
    else:
        _add(node, node.piper, deltas)
    return counted.value


def _add(node: Node, piper: Piper, delta: Any) -> None:
    counts = node.cache_counts.get(id(piper))
    if counts is None:          # a Worker cached by hand, on a Piper without cache=
        counts = node.cache_counts[id(piper)] = dict.fromkeys(OUTCOMES, 0)
    for outcome, amount in zip(OUTCOMES, delta.counts()):
        counts[outcome] += amount
    if delta.warnings and delta.pid != os.getpid():
        for warning in delta.warnings:      # logged only where it was raised
            log.warning("piper %r: %s", piper.name, warning)


def count_skipped(node: Node, piper: Piper) -> None:
    """An item the run did not give ``piper``'s Worker (fused: a stage before it failed)."""
    counts = node.cache_counts.get(id(piper))
    if counts is not None:
        counts["upstream_failed"] += 1


def count_lost(node: Node, amount: int) -> None:
    """Errors in place of results (timeouts, lost workers, BaseExceptions): failed."""
    counts = node.cache_counts.get(id(node.piper))
    if counts is not None:
        counts["failed"] += amount


def cache_stats(run: Run | None, pipers: list[Piper]) -> dict[str, dict[str, int]]:
    """``{piper name: {'executed': n, 'cached': n, 'failed': n, 'upstream_failed': n}}``
    for the cached Pipers of ``run`` (live: the dicts the run counts into)."""
    found: dict[str, dict[str, int]] = {}
    if run is None:
        return found
    for piper in pipers:
        node = run.node_of(piper)
        counts = node.cache_counts.get(id(piper)) if node is not None else None
        if counts is not None:
            found[piper.name] = counts
    return found


def summary_lines(stats: dict[str, Any]) -> list[str]:
    """The cache's part of a run's summary: one line per cached Piper, then the totals."""
    per_piper = stats.get("cache") or {}
    if not per_piper:
        return []
    width = max(len("cache"), *(len(name) for name in per_piper))
    lines = [f"  {'cache':<{width}} {'executed':>9} {'cached':>9} {'failed':>7} "
             f"{'upstream failed':>16}"]
    totals = dict.fromkeys(OUTCOMES, 0)
    for name, counts in per_piper.items():
        lines.append(f"  {name:<{width}} {counts['executed']:>9} {counts['cached']:>9} "
                     f"{counts['failed']:>7} {counts['upstream_failed']:>16}")
        for outcome in OUTCOMES:
            totals[outcome] += counts[outcome]
    lines.append(f"  cache: {totals['executed']} executed, {totals['cached']} from the "
                 f"cache, {totals['failed']} failed, {totals['upstream_failed']} skipped "
                 f"after an upstream failure")
    return lines
