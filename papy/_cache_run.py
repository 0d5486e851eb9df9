"""The run layer's side of the cache: the per-item record of every cached Piper of a run.

    where a Worker runs (papy._timed TimedCall/BoxingCall, papy._fuse FusedCall), after
    each batch:  carry(record, values, raised)
        one result of the batch becomes Counted(delta, result): the RecordDelta taken
        from the cached Worker's record (a fused call: one delta per stage, a tuple)
    item by item (an IMap's tracked mode): call_one(record, call, item)
        every result is a Counted; the cached Workers' entries wait in PENDING and are
        written before the results leave the worker (PendingWrites)
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
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._nodes import Node
    from ._piper import Piper
    from ._run import Run

log = logging.getLogger(__name__)

__all__ = ["Counted", "Later", "DEFERRING", "PENDING", "record_of", "carry", "call_one",
           "carry_stages", "count_carried", "count_skipped", "count_lost", "cache_counts_of",
           "cache_stats", "summary_lines"]

OUTCOMES = ("executed", "cached", "failed", "upstream_failed")


class Counted:
    """A result that also carries the cache record's deltas of the Worker(s) that made it:
    a RecordDelta, or for a fused call a tuple with one (or None) per stage; None when it
    only marks a result of a per-item call (see ``call_one``).

    Pickling it (the worker's reply to the parent) first writes the entries this process
    deferred (``PENDING``): they are on disk before the results leave the worker."""

    __slots__ = ("deltas", "value")

    def __init__(self, deltas: Any, value: Any):
        self.deltas, self.value = deltas, value

    def __reduce__(self) -> tuple[Any, ...]:
        PENDING.flush()
        deltas = self.deltas
        return (Counted, (deltas.take() if type(deltas) is Later else deltas, self.value))


class Later:
    """The deltas of a per-item result, taken when the result leaves the worker (the
    batch's reply is pickled) or is settled, whichever comes first: the first result of a
    batch to leave takes what every item of it counted; the others take nothing."""

    __slots__ = ("records",)

    def __init__(self, records: Any):
        self.records = records          # a CacheRecord, or one (or None) per fused stage

    def take(self) -> Any:
        records = self.records
        if type(records) is not list:
            return records.take()
        deltas = tuple(None if r is None else r.take() for r in records)
        return deltas if any(d is not None for d in deltas) else None


class _Deferring(threading.local):
    on = False


#: set by ``call_one`` in the thread that evaluates one item: a cached Worker then adds
#: its new entries to PENDING instead of writing a pack for each item
DEFERRING = _Deferring()


class PendingWrites:
    """The cached Workers of this process holding entries computed item by item and not
    written yet (each holds its own: ``WorkerCache.write_pending``), and the keys read
    item by item (their uses records, for prune).

    An IMap evaluates short batches and slow items one by one ("tracked"): a pack per item
    would cost more than the items themselves (and keep the IMap from ever batching). The
    results of such a batch leave the worker together, after its last item, and always
    inside ``Counted``: the entries are written in one pack per Worker when the reply is
    pickled (``Counted.__reduce__``: processes, remote hosts) or, for a pool in this
    process, when the parent settles the results (``count_carried``) -- before they go
    downstream either way. A Worker holding LIMIT entries writes them at once."""

    LIMIT = 4096

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Start empty (also in a forked child: it writes only what it computes)."""
        self.lock = threading.Lock()
        self.owners: dict[int, Any] = {}
        self.uses: dict[tuple[str, bytes], list[Any]] = {}     # keys read, for prune
        self.count = 0

    def enlist(self, owner: Any) -> None:
        """``owner`` holds deferred entries or counts now."""
        with self.lock:
            self.owners[id(owner)] = owner
            self.count += 1

    def add_uses(self, folder: str, prefix: bytes, keys: list[Any]) -> None:
        """Keys read item by item: their uses record is written with the entries."""
        with self.lock:
            self.uses.setdefault((folder, prefix), []).extend(keys)
            self.count += 1

    def flush(self) -> None:
        """Write what is pending (never raises: a failure is logged, as the write of a
        batch would have been; the items go on uncached), and the statistics counted
        meanwhile."""
        if not self.count:
            return
        with self.lock:
            owners, self.owners, self.count = self.owners, {}, 0
            uses, self.uses = self.uses, {}
        for owner in owners.values():
            try:
                owner.write_pending()
            except Exception:  # a bug here must not lose the batch's results: logged
                log.exception("papy cache: deferred entries of %s could not be written",
                              getattr(owner, "label", owner))
        if uses:
            from ._cache_prune import note_uses
            for (folder, prefix), keys in uses.items():
                note_uses(folder, prefix, keys)


PENDING = PendingWrites()
os.register_at_fork(after_in_child=PENDING.forget)


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
    """Where the Worker runs: wrap one result of the batch with the record's delta (not in
    a per-item call: its result carries them, ``call_one``)."""
    if DEFERRING.on:
        return
    position = _carrier(values, raised)
    if position >= 0:
        delta = record.take()
        if delta is not None:
            values[position] = Counted(delta, values[position])


def call_one(records: Any, call: Any, argument: Any) -> Counted:
    """A per-item call of the run layer (an IMap's tracked mode): ``call(argument)`` with
    the cached Workers' writes deferred (PENDING), its result a Counted whose deltas
    (``records``: a CacheRecord, or a list with one or None per fused stage) are taken
    when it leaves (``Later``). A BaseException of the function is raised (the IMap makes
    it that item's error)."""
    previous, DEFERRING.on = DEFERRING.on, True
    try:
        result = call(argument)
    finally:
        DEFERRING.on = previous
    return Counted(Later(records), result)


def carry_stages(records: list[Any], values: list[Any],
                 raised: dict[int, BaseException] | None) -> None:
    """A fused call: one delta per stage (None for a stage without a cache); not in a
    per-item call (``call_one``)."""
    if DEFERRING.on:
        return
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
    """Add what ``counted`` carries to the node's counts; the result it wraps. The entries
    deferred in this process (a pool of threads: PENDING) are written first."""
    PENDING.flush()
    deltas = counted.deltas
    if type(deltas) is Later:
        deltas = deltas.take()
    if deltas is None:
        pass
    elif type(deltas) is tuple:
        for piper, delta in zip(node.pipers, deltas, strict=True):
            if delta is not None:
                _add(node, piper, delta)
    else:
        _add(node, node.piper, deltas)
    return counted.value


def _add(node: Node, piper: Piper, delta: Any) -> None:
    counts = node.cache_counts.get(id(piper))
    if counts is None:          # a Worker cached by hand, on a Piper without cache=
        counts = node.cache_counts[id(piper)] = dict.fromkeys(OUTCOMES, 0)
    for outcome, amount in zip(OUTCOMES, delta.counts(), strict=True):
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


def summary_lines(plumber: Any) -> list[str]:
    """The cache's part of a run's summary (papy._progress.SUMMARY_SECTIONS): one line per
    cached Piper, then the totals."""
    per_piper = (getattr(plumber, "stats", None) or {}).get("cache") or {}
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
