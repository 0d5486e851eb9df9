"""IterableSource: any iterable as a BatchSource whose take() never waits.

    steady input (list, range, ...)  take(count): read in bulk, in C, in the caller's thread
    in_caller=True, any other input  take(count): one next() in the caller's thread (it waits)
    any other iterator               reader thread --next()--> ready queue --take()--> caller
                                     caller --take(count): demand--> reader (reads ahead only
                                     as far as the last take() asked and did not get)

Who touches what (unsteady inputs):
    reader thread   calls next() on the user's iterator, appends to ``_ready`` (a deque:
                    append and popleft are atomic), calls the wake when armed
    caller          take(): pops under ``_cond``, sets the demand, arms the wake
    close()         any thread: the reader returns at its next check

The read-ahead: the reader holds at most ``min(read_ahead, demand)`` items, where the demand
is what the last take(count) asked for and did not get. An IMap reserves that many buffer
slots for the input before it asks, so what the reader holds counts against the buffer.

Shutdown: close() sets ``_closed`` and wakes the reader; a reader blocked inside the user's
iterator returns after that next() returns (it is a daemon thread: the IMap waits for it a
short grace, then abandons it with a warning).
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
from typing import Any, Generic, TypeVar
from collections.abc import Iterable, Iterator

from .protocols import Wake

__all__ = ["IterableSource"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_STEADY: set[type] = {type(iter(kind())) for kind in (list, tuple, set, frozenset, dict, str,
                                                      bytes, bytearray)}
_STEADY |= {type(iter(range(1))), type(iter(range(1 << 64))), type(iter({}.values())),
            type(iter({}.items())), itertools.count, itertools.repeat}


def inner_iterators(obj: object) -> list[Any]:
    """The iterators a zip, map or enumerate reads from ([] for anything else)."""
    if type(obj) not in (zip, map, enumerate):
        return []
    return [part for part in obj.__reduce__()[1] if hasattr(part, "__next__")]


def is_steady(iterator: object) -> bool:
    """An in-memory iterator that never waits for data (a list, a range, ...), possibly
    behind zip/map/enumerate: read in bulk. Anything else (generators, files, sockets,
    queues) may wait, and is read by a reader thread."""
    if type(iterator) in _STEADY:
        return True
    parts = inner_iterators(iterator)
    return bool(parts) and all(is_steady(part) for part in parts)


class _Failure:
    """An exception raised by the input, queued in its position (never user data)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


class IterableSource(Generic[T]):
    """Any iterable as a ``BatchSource``: ``take(count)`` never waits.

    Steady in-memory iterables (list, tuple, range, dict views, and zip/map/enumerate of
    them) are read in bulk by ``take`` itself. Any other iterator (a generator, a file, a
    socket) is read by a reader thread, started at the first ``take()`` or ``notify()``,
    which hands each item over as soon as it has it: an item of a slow input is never held
    back waiting for more. The reader reads ahead at most ``read_ahead`` items, and no more
    than the last ``take(count)`` asked for and did not get.

    ``in_caller=True``: no reader thread; ``take`` reads in the caller's thread, in bulk from
    a steady input and one item per call from any other (waiting for it, as ``next()``
    does): for a consumer that waits in its own thread anyway (an inline IMap).

    Example::

        source = IterableSource(open("log"), read_ahead=64, name="log")
        source.notify(my_wake)
        items = source.take(64)     # [] until the reader has lines; None at the end
        ...
        source.close()
    """

    def __init__(self, iterable: Iterable[T], *, read_ahead: int, name: str,
                 in_caller: bool = False) -> None:
        if isinstance(read_ahead, bool) or not isinstance(read_ahead, int) or read_ahead < 1:
            raise ValueError(f"read_ahead must be an int >= 1, not {read_ahead!r}")
        try:
            self._iterator: Iterator[T] = iter(iterable)
        except TypeError:
            raise TypeError(f"{name}: the input is not iterable ({type(iterable).__name__})"
                            ) from None
        self.name = name
        self.read_ahead = read_ahead
        self.steady = is_steady(self._iterator)
        self._per_take: int | None = None      # steady: as many as asked
        if in_caller and not self.steady:
            self.steady, self._per_take = True, 1
        self._cond = threading.Condition(threading.Lock())
        self._ready: collections.deque[Any] = collections.deque()
        self._demand = 0
        self._wake: Wake | None = None
        self._armed = False
        self._exhausted = False       # the iterator ended (what is in _ready is the rest)
        self._closed = False
        self._reader_waits = False
        self._raised: BaseException | None = None   # steady: an error for the next take
        self.thread: threading.Thread | None = None

    # -- BatchSource ------------------------------------------------------------------

    def take(self, count: int) -> list[T] | None:
        """Up to ``count`` items ready now; [] if none yet; None at the end (see class)."""
        if self.steady:
            return self._take_steady(count)
        self._start_reader()
        with self._cond:
            items = self._pop(count)
            if not items:
                if self._exhausted or self._closed:
                    return None
                self._armed = True           # wake the caller when the reader has more
                items = self._pop(count)     # ... unless it just did
            elif len(items) < count:
                self._armed = True
            self._demand = count - len(items)
            if self._reader_waits:
                self._cond.notify()
        if items and type(items[0]) is _Failure:
            raise items[0].error
        return items

    def notify(self, wake: Wake) -> None:
        """Register ``wake`` (see BatchSource.notify)."""
        self._wake = wake
        if not self.steady:
            self._start_reader()

    def close(self) -> None:
        """Stop reading: the reader thread returns (after the next() it may be inside);
        later take() calls return None. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __repr__(self) -> str:
        kind = "steady" if self.steady else "reader thread"
        return f"<IterableSource {self.name} ({kind})>"

    # -- steady inputs ----------------------------------------------------------------

    def _take_steady(self, count: int) -> list[T] | None:
        if self._raised is not None:
            error, self._raised = self._raised, None
            raise error
        if self._exhausted or self._closed:
            return None
        items: list[T] = []
        count = min(count, self._per_take or count)
        try:
            items.extend(itertools.islice(self._iterator, count))
        except BaseException as exc:  # the error of the next position
            if not items:
                raise
            self._raised = exc
            return items
        if len(items) < count:
            self._exhausted = True
            if not items:
                return None
        return items

    # -- the reader thread ------------------------------------------------------------

    def _pop(self, count: int) -> list[Any]:
        """Up to ``count`` ready entries, stopping before a failure (a failure first is
        returned alone). Under ``_cond``."""
        ready = self._ready
        items: list[Any] = []
        while ready and len(items) < count:
            entry = ready[0]
            if type(entry) is _Failure:
                if not items:
                    items.append(ready.popleft())
                break
            items.append(ready.popleft())
        return items

    def _start_reader(self) -> None:
        if self.thread is not None:
            return
        with self._cond:
            if self.thread is not None:    # another thread started it meanwhile
                return  # type: ignore[unreachable]  # mypy assumes no other thread set it
            self.thread = threading.Thread(target=self._read_input, daemon=True,
                                           name=f"{self.name}-reader")
        self.thread.start()

    def _read_input(self) -> None:
        """The reader thread: one next() at a time, each item handed over at once."""
        iterator, ready = self._iterator, self._ready
        try:
            while True:
                if len(ready) >= min(self._demand, self.read_ahead) and not self._wait_for_demand():
                    return
                try:
                    entry: Any = next(iterator)
                except StopIteration:
                    break
                except BaseException as exc:  # noqa: BLE001 - that position's error
                    entry = _Failure(exc)
                if self._closed:
                    return
                ready.append(entry)
                if self._armed:
                    self._call_wake()
        finally:
            with self._cond:
                self._exhausted = True
            self._call_wake()

    def _wait_for_demand(self) -> bool:
        """Block until the caller wants more than the reader holds; False when closed."""
        with self._cond:
            while not self._closed and len(self._ready) >= min(self._demand, self.read_ahead):
                self._reader_waits = True
                self._cond.wait()
                self._reader_waits = False
            return not self._closed

    def _call_wake(self) -> None:
        self._armed = False
        wake = self._wake
        if wake is None:
            return
        try:
            wake()
        except Exception:  # the consumer's bug; the reader goes on
            log.exception("%s: the wake callback raised", self.name)
