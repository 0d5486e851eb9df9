"""Timed calls: what a Piper hands to its IMap, its Worker evaluated where it runs.

``TimedCall(worker)`` (``BoxingCall`` when the parent sends the items themselves, not
one-item inboxes) evaluates the Worker in the thread, process or host of the pool, item by
item (``__call__``) or a whole batch at once (``call_batch``: ``map_stage``, errors as
values), and measures the time the Worker is busy there. About every ``REPORT_EVERY``
seconds of work, one result travels wrapped in a ``Busy`` that carries the seconds summed
since the last report; the parent unwraps it when it settles the result (papy._settle).
A cached Worker's counts travel with its results (papy._cache_run).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from ._cache_run import call_one, carry, record_of
from ._worker import _SUSPECT, Raised, Worker, _worker_error, map_stage

__all__ = ["Busy", "TimedCall", "BoxingCall", "REPORT_EVERY"]

_clock = time.perf_counter
REPORT_EVERY = 0.01     # seconds of work between two reports of a TimedCall


class Busy:
    """A result that also carries the seconds a worker was busy since its last report (a
    tuple of seconds, one per stage, from a fused chain's FusedCall)."""

    __slots__ = ("seconds", "value")

    def __init__(self, seconds: float | tuple[float, ...], value: Any):
        self.seconds, self.value = seconds, value

    def __reduce__(self) -> tuple[type[Busy], tuple[float | tuple[float, ...], Any]]:
        return (Busy, (self.seconds, self.value))


class TimedCall:
    """Evaluate a Worker and measure the time it is busy where it runs.

    This is what a Piper hands to its IMap, so the time is measured in the thread, process
    or host that evaluates. Most results travel bare; about every ``REPORT_EVERY`` seconds
    of work one is wrapped in a ``Busy`` carrying the time summed since the last report
    (the time of the last few milliseconds of a run may be missing from the total).
    """

    __slots__ = ("worker", "bare", "pending", "reported", "record")
    boxed = False       # given inboxes (BoxingCall: items)
    worker: Callable[[Any], Any]
    bare: Callable[..., Any] | None
    pending: float
    reported: float
    record: Any         # a cached Worker's record (papy._cache_run.record_of), or None

    def __init__(self, worker: Callable[[Any], Any]):
        self.__setstate__(worker)

    def call_batch(self, items: list[Any]) -> tuple[list[Any], Raised]:
        """A whole batch (``imap._evaluate.evaluate``): timed once, errors as values."""
        start = _clock()
        values, raised = map_stage(self.worker, self.bare, items, self.boxed)
        if self.record is not None:     # a cached Worker's counts travel with its results
            carry(self.record, values, raised)
        now = _clock()
        self.pending += now - start
        if now - self.reported >= REPORT_EVERY and values and not raised:
            values[-1] = Busy(self.pending, values[-1])
            self.pending, self.reported = 0.0, now
        return values, raised

    def __call__(self, inbox: Any) -> Any:
        bare = self.bare
        start = _clock()
        if bare is not None and type(inbox) is list and len(inbox) == 1 \
                and not isinstance(inbox[0], _SUSPECT):   # Worker.__call__'s fast path
            try:
                result = bare(inbox)
            except Exception as exc:  # noqa: BLE001 - every user error becomes a value
                result = _worker_error(exc, bare, inbox)
        elif self.record is not None:   # a cached Worker: its writes wait for the batch
            result = call_one(self.record, self.worker, inbox)
        else:
            result = self.worker(inbox)
        now = _clock()
        self.pending += now - start
        if now - self.reported < REPORT_EVERY:
            return result
        busy, self.pending, self.reported = self.pending, 0.0, now
        return Busy(busy, result)

    def __getstate__(self) -> Callable[[Any], Any]:
        return self.worker

    def __setstate__(self, state: Callable[[Any], Any]) -> None:
        self.worker = state
        # a Worker of one function without arguments: evaluated here, one call less
        self.bare = getattr(state, "_bare", None) if isinstance(state, Worker) else None
        self.record = record_of(state)     # a cached Worker's record, or None
        self.pending = 0.0
        self.reported = time.perf_counter()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.worker!r})"


class BoxingCall(TimedCall):
    """A TimedCall given the item itself, which makes the inbox ``[item]`` where it runs.

    For a Piper with one input and ``consume=1``: the parent builds no inbox lists and
    pickles the bare items (about 5x cheaper than one-item lists); the Worker sees the
    same inbox.
    """

    __slots__ = ()
    boxed = True

    def __call__(self, item: Any) -> Any:
        # TimedCall.__call__'s body, inlined on purpose: this runs per item for linear
        # Pipers and the IMap's tracked batches; delegating (one call more per item)
        # measured 0.17x instead of 0.24x Pool.imap in scripts/bench_pipeline.py (b) when
        # IMap batches were still evaluated item by item
        inbox = [item]
        bare = self.bare
        start = _clock()
        if bare is not None and not isinstance(item, _SUSPECT):
            try:
                result = bare(inbox)
            except Exception as exc:  # noqa: BLE001 - every user error becomes a value
                result = _worker_error(exc, bare, inbox)
        elif self.record is not None:   # a cached Worker: its writes wait for the batch
            result = call_one(self.record, self.worker, inbox)
        else:
            result = self.worker(inbox)
        now = _clock()
        self.pending += now - start
        if now - self.reported < REPORT_EVERY:
            return result
        busy, self.pending, self.reported = self.pending, 0.0, now
        return Busy(busy, result)
