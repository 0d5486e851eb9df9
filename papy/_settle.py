"""Settled: a Piper's results as they leave its Worker, with the parent's bookkeeping.

    raw results (an IMap task, spawned tasks in turn, or map() for a linear Piper)
        |  Busy: time busy added up (per stage when fused)
        |  WorkerError -> PiperError (logged); StageFailed -> passed on through the stages
        |  tracked[index] = result; items_in (count_in, fused) and items_out (last) counted
        v
    __next__()                 one result (the output reader, produce(), a Tee)
    __imap_read__(count)       the results that are ready, at least one, up to ``count``: an
                               IMap feeder reading this Piper's output in bulk (see
                               ``imap._feeder``); None when ``raw`` cannot be read so

The reader of an output Piper (``output_reader``) takes those ready lists one after the
other and hands their items out through a C iterator (``iter(piper)``, ``next(piper)``).

Plain results (``PLAIN`` types) of a Piper that tracks nothing are handed on as they are
(counted); in bulk, one C-level scan of their types checks a whole list.
"""
from __future__ import annotations

import itertools
import logging
from itertools import compress
from operator import not_

from ._errors import PapyError, PiperError, WorkerError
from ._fuse import StageFailed
from ._runtime import raise_failures
from ._streams import READ_ERRORS, ReaderCounters, read_error
from ._worker import NEVER_SUSPECT, Busy

log = logging.getLogger("papy")

__all__ = ["Settled", "PLAIN", "error_item", "stage_failed", "output_reader"]

# exact types that are never a Busy nor a PapyError: settling skips its tests for them
PLAIN = NEVER_SUSPECT | {list}


class Settled:
    """The settled results of ``piper`` read from ``raw`` (see the module docstring).

    ``last``: nothing follows (no produce, no debug): count ``items_out`` and mark the end.
    ``count_in``: count the first Piper's ``items_in`` here (one inbox per result; the
    inboxes were made in C). ``retry``: ``raw`` is an IMap task: a timeout or an imap error
    is a PiperError in place, then reading goes on from the next position (a new iteration
    of ``raw``). Fused (``piper._absorbs``): the results of the whole segment, each counted
    in the owner's ``items_in`` (the absorbed Pipers' counters link to it).
    """

    __slots__ = ("piper", "raw", "stream", "last", "count_in", "retry", "fused", "quick",
                 "counters", "head", "tracked", "index")

    def __init__(self, piper, raw, last: bool, count_in: bool = False, retry: bool = False):
        self.piper, self.raw, self.stream = piper, raw, iter(raw)
        self.last, self.count_in, self.retry = last, count_in, retry
        self.fused = bool(piper._absorbs)
        self.counters = piper.counters
        self.head = piper._absorbs[0].counters if self.fused else self.counters
        self.tracked = piper.tracked if piper.track else None
        self.quick = self.tracked is None
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self):
        try:
            result = next(self.stream)
        except StopIteration:
            if self.last:
                self.piper._end_stream()
            raise
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - an error in place, or raised
            return self._failed(exc)
        if self.quick and type(result) in PLAIN:
            # _count(1) inlined: this runs per item for readers that read item by item
            if self.count_in:
                self.head.items_in += 1
            if self.fused:
                self.counters.items_in += 1
            if self.last:
                self.counters.items_out += 1
            return result
        return self._settle(result)

    def __imap_read__(self, count: int):
        stream = self.stream
        read = getattr(type(stream), "__imap_read__", None)
        if read is None:
            return None
        try:
            results = read(stream, count)
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            return [self._failed(exc)]
        if results is None:
            return None
        if not results:
            if self.last:
                self.piper._end_stream()
            return results
        if not self.quick:
            return [self._settle(result) for result in results]
        if not PLAIN.issuperset(map(type, results)):
            last = len(results) - 1
            if type(results[last]) is Busy and PLAIN.issuperset(
                    map(type, itertools.islice(results, last))):
                results[last] = self._convert(results[last])    # a batch's Busy report
            else:   # errors, ...: find them in C
                odd = compress(itertools.count(),
                               map(not_, map(PLAIN.__contains__, map(type, results))))
                for position in list(odd):
                    results[position] = self._convert(results[position])
        self._count(len(results))
        return results

    def _convert(self, result):
        """A result that is not PLAIN: its Busy time added up, an error item made."""
        piper = self.piper
        if type(result) is Busy:
            if self.fused:
                for one, busy in zip(piper._absorbs + (piper,), result.seconds):
                    one.counters.time_busy += busy
            else:
                self.counters.time_busy += result.seconds
            result = result.value
        if type(result) is StageFailed:
            return stage_failed(piper, result.stage, result.error)
        if isinstance(result, PapyError):
            return error_item(piper, result)
        return result

    def _settle(self, result):
        if type(result) not in PLAIN:
            result = self._convert(result)
        if self.tracked is not None:
            self.tracked[self.index] = result
        self.index += 1
        self._count(1)
        return result

    def _count(self, n: int) -> None:
        """``n`` results settled: the first Piper's inboxes (count_in), the owner's items
        in (fused), the items out (last)."""
        if self.count_in:
            self.head.items_in += n
        if self.fused:
            self.counters.items_in += n
        if self.last:
            self.counters.items_out += n

    def _failed(self, exc: BaseException):
        piper = self.piper
        if not (self.retry and isinstance(exc, READ_ERRORS)):
            reader = piper._bound_reader
            if reader is None:
                raise exc
            # read by the only downstream Piper at C speed: do what its inboxes() would do
            # with an input that raised (an error in place, then the end)
            piper._context.fail(exc, f"the input of piper {reader.name!r} raised")
            self.stream = iter(())
            return PiperError(exc)
        self.stream = iter(self.raw)        # the next position, after the error
        # fused: which stage the item was in when the IMap lost it is not known; the error
        # is this Piper's (the chain's last), as if the chain were one Piper
        return self._settle(read_error(exc, piper.name, piper.timeout))


def error_item(piper, error):
    """The error item ``piper`` gives for ``error`` (a WorkerError is logged and wrapped in
    a PiperError); counts it."""
    if isinstance(error, WorkerError):
        log.error("piper %r: %s", piper.name, error)
        log.debug("piper %r: traceback:\n%s", piper.name, error.traceback_text)
        error = PiperError(error)
    piper.counters.errors += 1
    return error


def stage_failed(piper, stage: int, error):
    """Fused: stage ``stage`` of ``piper``'s chain gave ``error``; each later Piper passes
    it on as its Worker would have (``PiperError(error)``), each counting an error."""
    pipers = piper._absorbs + (piper,)
    error = error_item(pipers[stage], error)
    for later in pipers[stage + 1:]:
        error = error_item(later, PiperError(error))
    return error


# -- the reader of an output Piper -------------------------------------------------------

_NO_ITEM = object()          # never a result: iter(read, _NO_ITEM) ends at StopIteration only
_READ_AT_ONCE = 1 << 16     # results an output reader takes from its IMap at most at once


def output_reader(piper):
    """The results of an output Piper, shared by next() and iteration: a chain of the lists
    of results its IMap task has ready (``Settled.__imap_read__``), or of its results one by
    one; at the end, a Piper used without a Plumber raises the failures of its run."""
    read = piper._outlet_reader(0)
    outbox = piper.outbox if piper._direct and read is piper._next_item else None
    if getattr(type(outbox), "__imap_read__", None) is not None:
        parts = _ready_lists(piper, outbox)
    else:
        parts = (iter(read, _NO_ITEM),)     # ends when read() raises StopIteration
    return itertools.chain.from_iterable(itertools.chain(parts, _finish(piper)))


def _ready_lists(piper, outbox):
    counters = piper.counters
    counters.__class__ = ReaderCounters     # items_out: what was read, not handed over
    while True:
        if not piper.started:
            raise PiperError(f"piper {piper.name!r} is not started")
        results = outbox.__imap_read__(_READ_AT_ONCE)
        if results is None:                 # no longer readable in bulk
            counters.unread = None
            yield iter(outbox.__next__, _NO_ITEM)
            return
        if not results:
            counters.unread = None
            return
        counters.unread = unread = iter(results)
        yield unread


def _finish(piper):
    context = piper._context
    if context.standalone:
        raise_failures(context.take_failures(), f"piper {piper.name!r}")
    return
    yield       # a generator: runs when the results have ended
