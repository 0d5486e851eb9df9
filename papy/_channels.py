"""The queues of a run: between two nodes, into an IMap task, and to an output's readers.

    node --put(batch)--> Pipe --take(n)--> node            (scheduler thread only: no lock)
    scheduler --push_many(batch)--> imap.PushSource --take(n)--> IMap feeder thread
    scheduler --put(batch)--> Outlet --take()--> output readers (plunger, next(), for)

Items travel as batches (lists), never one generator step per item. A batch put into a
queue belongs to the queue: nobody mutates it afterwards (a fan-out puts the same list into
every downstream Pipe; taking part of a batch copies that part, taking all of it does not).

Who owns what: a Pipe belongs to the scheduler thread. A node's ``imap.PushSource`` is
written by the scheduler and read by one IMap feeder (imap owns its lock). An Outlet is
written by the scheduler and read by any number of reader threads; its batches and end are
guarded by the run's ``Wakeup`` condition shared by every Outlet of the run, so that the
plunger waits for any output at once.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Iterator

from imap import take_from

__all__ = ["Pipe", "Outlet", "Wakeup"]

Wake = Callable[[], None]


class Pipe:
    """The items one node gives another (one per downstream input), in order.

    ``closed`` is set by the writer at the end of its stream; ``ended`` is closed and empty.
    """

    __slots__ = ("batches", "count", "closed", "reader")

    def __init__(self) -> None:
        self.batches: collections.deque[list[Any]] = collections.deque()
        self.count = 0
        self.closed = False
        self.reader = ""            # the name of the Piper that reads it (for messages)

    def __len__(self) -> int:
        return self.count

    @property
    def ended(self) -> bool:
        return self.closed and not self.count

    def put(self, batch: list[Any]) -> None:
        if batch:
            self.batches.append(batch)
            self.count += len(batch)

    def take(self, count: int) -> list[Any]:
        """Up to ``count`` items ([] when empty)."""
        if not self.count or count <= 0:
            return []
        taken = take_from(self.batches, count)
        self.count -= len(taken)
        return taken

    def take_all(self) -> list[Any]:
        return self.take(self.count)


class Wakeup:
    """The run's one condition: the scheduler waits on it for anything to do; output
    readers wait on it for their Outlet. ``poke()`` is cheap and callable from any thread
    (IMap slot threads, input readers, output readers, stop requests)."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.dirty = False

    def poke(self) -> None:
        with self.cond:
            self.dirty = True
            self.cond.notify_all()

    def wait(self, timeout: float | None = None) -> None:
        """Scheduler: block until poked (at once when poked since the last wait)."""
        with self.cond:
            if not self.dirty:
                self.cond.wait(timeout)
            self.dirty = False


class Outlet:
    """The results of an output node for its readers: batches in order, then the end (or
    the reason the run was stopped). Several reader threads may take batches; each batch
    goes to one of them."""

    def __init__(self, name: str, wakeup: Wakeup) -> None:
        self.name = name
        self._wakeup = wakeup
        self._batches: collections.deque[list[Any]] = collections.deque()
        self.count = 0              # items put and not taken (read without the lock: a hint)
        self.closed = False
        self.aborted: BaseException | None = None

    def put(self, batch: list[Any]) -> None:
        if not batch:
            return
        with self._wakeup.cond:
            self._batches.append(batch)
            self.count += len(batch)
            self._wakeup.cond.notify_all()

    def close(self, aborted: BaseException | None = None) -> None:
        with self._wakeup.cond:
            self.closed = True
            if aborted is not None and self.aborted is None:
                self.aborted = aborted
                self._batches.clear()
                self.count = 0
            self._wakeup.cond.notify_all()

    def ready(self) -> bool:
        """A batch or the end can be taken without waiting (call under the condition)."""
        return bool(self._batches) or self.closed

    def take(self, block: bool = True, timeout: float | None = None) -> list[Any] | None:
        """The next batch; None at the end. Raises the abort reason of a stopped run, and
        TimeoutError when ``block`` is False or ``timeout`` passed with nothing ready."""
        cond = self._wakeup.cond
        with cond:
            if not self._batches and not self.closed:
                if not block:
                    raise TimeoutError(f"no result of {self.name} is ready")
                if not cond.wait_for(self.ready, timeout):
                    raise TimeoutError(f"no result of {self.name} within {timeout} s")
            if self._batches:
                batch = self._batches.popleft()
                self.count -= len(batch)
            elif self.aborted is not None:
                raise self.aborted
            else:
                return None
        self._wakeup.poke()         # room for the scheduler to admit more
        return batch

    def batches(self) -> Iterator[list[Any]]:
        while True:
            batch = self.take()
            if batch is None:
                return
            yield batch
