"""Fusion: consecutive Pipers on one IMap evaluated in one call, so an item crosses the
parent once per segment instead of once per Piper.

    without fusion                              with fusion (one segment a -> b -> c)

    parent  --a's task-->  worker               parent  --c's task-->  worker:
    parent  <--result----                                              a, then b, then c
    parent  --b's task-->  worker               parent  <--result----
    parent  <--result----                         (Busy: seconds per stage; StageFailed:
    parent  --c's task-->  worker                  the stage that gave an error, which
    parent  <--result----                          the parent passes on as b and c would)

A *segment* is a chain ``p1 -> ... -> pk`` (k >= 2) in which each Piper but the last is read
only by the next one and each Piper but the first reads only the previous one, all on the
same IMap, and nothing is done in the parent between two of them: ``spawn == 1`` and no
``timeout`` anywhere, ``produce == 1``, no ``track`` and no ``debug`` on ``p1 .. pk-1``,
``consume == 1`` on ``p2 .. pk``. The last Piper ``pk`` owns the IMap task (its Worker runs
after the others'); it reads the inputs of ``p1`` with ``p1``'s ``consume``. The results, the
errors in place, the log records and every Piper's counters are what the unfused pipeline
gives, except for errors of the IMap itself (a worker lost, a result that cannot be
pickled): which stage the item was in is not known, so they are the last Piper's. Also
different: the absorbed Pipers' results are not pickled between two stages (a
stage that mutates its input mutates the previous stage's result, which nobody else reads),
their ``time_waiting`` is 0 (the owner's covers the segment), and their ``items_out`` (and the
next Piper's ``items_in``) count the items that left the whole segment.

``Dagger.fuse = False`` (or ``plumber.fuse = False``) turns fusion off.
"""
from __future__ import annotations

from ._errors import PiperError, WorkerError
from ._streams import PiperCounters
from ._worker import REPORT_EVERY, Busy, _clock, any_instance, map_stage

__all__ = ["segments", "FusedCall", "StageFailed", "LinkedCounters"]


def segments(order: list, upstream, downstream) -> dict:
    """``{id(last): [p1, ..., pk-1]}`` for every segment of the graph (see the module
    docstring); ``upstream(p)``/``downstream(p)`` give a Piper's neighbours."""
    found = {}
    for piper in order:         # upstream first: a chain grows one Piper at a time
        ups = upstream(piper)
        if len(ups) == 1 and _joinable(ups[0], piper, downstream):
            found[id(piper)] = found.pop(id(ups[0]), []) + [ups[0]]
    return found


def _joinable(up, piper, downstream) -> bool:
    """``up -> piper`` can be one call: same IMap, nothing between them in the parent."""
    imap = piper.parallel
    return (imap is not False and up.parallel is imap
            and not up.connected and not piper.connected
            and len(downstream(up)) == 1
            and up.spawn == 1 and piper.spawn == 1
            and up.timeout is None and piper.timeout is None
            and up.produce == 1 and not up.track and not up.debug
            and piper.consume == 1)


class StageFailed:
    """What a FusedCall returns when stage ``stage`` (not the last) gave an error: the
    later stages were skipped; the parent passes ``error`` on through them."""

    __slots__ = ("stage", "error")

    def __init__(self, stage: int, error):
        self.stage, self.error = stage, error

    def __reduce__(self):
        return (StageFailed, (self.stage, self.error))


class FusedCall:
    """Evaluate the Workers of a segment one after the other where the call runs, timing
    each; ``boxing``: the call is given the item, not the inbox (as ``BoxingCall``).

    A batch (``__imap_batch__``) goes through each stage in turn, in C where it can
    (``map_stage``); an item that an earlier stage failed (an error item, which the next
    Worker would not evaluate) skips the later ones, and so does an item whose function
    raised what is not an Exception (it is that position's error, as per item). Most
    results travel bare; about every ``REPORT_EVERY`` seconds one is wrapped in a ``Busy``
    whose ``seconds`` is a tuple, one per stage.
    """

    __slots__ = ("workers", "boxing", "stages", "pending", "reported")

    def __init__(self, workers, boxing: bool):
        self.__setstate__((tuple(workers), boxing))

    def __imap_batch__(self, items: list):
        pending, last = self.pending, len(self.stages) - 1
        failed, raised = {}, {}     # by position in items: StageFailed / not an Exception
        positions = None            # where the values go in items, once some dropped out
        values, boxed = items, self.boxing
        start = _clock()
        for stage, (worker, bare) in enumerate(self.stages):
            values, stage_raised = map_stage(worker, bare, values, boxed)
            boxed = True
            now = _clock()
            pending[stage] += now - start
            start = now
            if stage_raised or (stage != last and any_instance(values, _SKIPPED_BY_NEXT)):
                positions, values = _drop_out(stage, last, values, positions, stage_raised,
                                              failed, raised)
        if positions is not None:
            merged = [None] * len(items)
            for position, value in zip(positions, values):
                merged[position] = value
            for position, value in failed.items():
                merged[position] = value
            values = merged
        if now - self.reported >= REPORT_EVERY and len(items) - 1 not in raised:
            values[-1] = self._report(values[-1], now)
        return values, raised or None

    def __call__(self, inbox):
        """One item (the IMap's tracked mode: small batches, slow items)."""
        values, raised = self.__imap_batch__([inbox])
        if raised:
            raise raised[0]
        return values[0]

    def _report(self, value, now):
        # threads of a pool share this object: the list is changed in place, never replaced,
        # so that time another thread adds now is reported next time, not lost
        pending = self.pending
        busy = tuple(pending)
        for stage, seconds in enumerate(busy):
            pending[stage] -= seconds
        self.reported = now
        return Busy(busy, value)

    def __getstate__(self):
        return (self.workers, self.boxing)

    def __setstate__(self, state):
        self.workers, self.boxing = state
        self.stages = [(w, getattr(w, "_bare", None)) for w in self.workers]
        self.pending = [0.0] * len(self.workers)
        self.reported = _clock()

    def __repr__(self) -> str:
        return f"FusedCall({', '.join(repr(w) for w in self.workers)})"


# what the next stage's Worker would not evaluate: an error item (the parent makes a
# PiperError of a WorkerError before the next Piper sees it)
_SKIPPED_BY_NEXT = (PiperError, WorkerError)


def _drop_out(stage, last, values, positions, stage_raised, failed, raised):
    """The items that leave the segment at ``stage``: errors (``failed``, as StageFailed,
    unless it is the last stage) and what raised a non-Exception (``raised``). Returns
    the positions (in the batch) and the values that go on."""
    if positions is None:
        positions = range(len(values))
    stage_raised = stage_raised or {}
    kept_positions, kept = [], []
    for k, (position, value) in enumerate(zip(positions, values)):
        if k in stage_raised:
            raised[position] = stage_raised[k]
        elif stage != last and isinstance(value, _SKIPPED_BY_NEXT):
            failed[position] = StageFailed(stage, value)
        else:
            kept_positions.append(position)
            kept.append(value)
    return kept_positions, kept


_ITEMS_IN = PiperCounters.items_in      # the slot of the base class


class LinkedCounters(PiperCounters):
    """The counters of a Piper absorbed into a segment: ``items_out`` (and ``items_in``,
    except for the segment's first Piper) are the items that the segment's last Piper
    took, ``link.items_in``; ``errors`` and ``time_busy`` are its own."""

    __slots__ = ("link", "first")

    def __init__(self, link: PiperCounters, first: bool):
        self.link, self.first = link, first
        super().__init__()

    @property
    def items_in(self) -> int:
        return _ITEMS_IN.__get__(self) if self.first else self.link.items_in

    @items_in.setter
    def items_in(self, value: int) -> None:
        _ITEMS_IN.__set__(self, value)

    @property
    def items_out(self) -> int:
        return self.link.items_in

    @items_out.setter
    def items_out(self, value: int) -> None:
        pass        # set by the dataclass __init__ only: the count is the link's
