"""What ``Executor.map`` returns: the results of one ordered IMap task, at C speed.

    map task --take_runs (by the consumer, in next(); by the Executor's collector once it
        shuts down)--> MapRun.ready: reversed lists of results, and errors in between
    MapStream (an itertools.chain) <-- _chunks(): per list, iter(list.pop, _END), so every
        result is popped (the stream keeps no reference to a result it gave); per error,
        a one-shot iterator that raises it (the chain then goes on with the next list)

With ``buffersize`` the calls are pushed as the results are taken: after a list of k
results was consumed, k more calls (at most ``buffersize`` calls are ahead).
"""
from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._calls import PushSource
    from ._results import TaskIterator

__all__ = ["MapRun", "MapStream"]

#: the bottom of every list of results (never user data)
_END = object()


class Failure:
    """An error among a map's results (never user data)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class MapRun:
    """One map() call: its task, and the results taken from it (under ``cond``)."""

    def __init__(self, handle: TaskIterator[Any], source: PushSource | None,
                 poke: Callable[[], None]) -> None:
        self.handle = handle
        self.source = source           # pushed as results are taken (buffersize)
        self.poke = poke               # the Executor's collector
        self.cond = threading.Condition(threading.RLock())
        self.ready: collections.deque[Any] = collections.deque()
        self.current: list[Any] = [_END]   # the list being handed out
        self.done = False              # every result was taken from the task
        self.error: BaseException | None = None   # the pool stopped under it
        self.abandoned = False         # its stream was dropped: the collector removes it
        self.collecting = False        # the Executor shuts down: its collector takes them

    def wake(self) -> None:
        """The task's notify: results arrived (or the task ended)."""
        with self.cond:
            self.cond.notify_all()
        if self.collecting:
            self.poke()

    def fetch(self) -> None:
        """Under ``cond``: move the task's ready results to ``ready``; at the end of the
        task, ``done`` and the task is taken off the pool."""
        if self.done:
            return
        record = self.handle._record
        moved = False
        while True:                    # until none is ready, or the end (seen at once)
            runs = record.take_runs(None)
            if not runs:
                break
            moved = True
            for _, values, errors in runs:
                self._add(values, errors)
        if moved:
            record.wake_feeder_if_due()
            self.cond.notify_all()
        if runs is None:
            self.done = True
            self.cond.notify_all()
            self.handle.remove()

    def _add(self, values: list[Any], errors: dict[int, BaseException] | None) -> None:
        """One run of results: plain stretches as reversed lists with _END at the bottom,
        each error on its own."""
        if errors is None:
            self.ready.append(_popping(values))
            return
        start = 0
        for position in sorted(errors):
            if position > start:
                self.ready.append(_popping(values[start:position]))
            self.ready.append(Failure(errors[position]))
            start = position + 1
        if start < len(values):
            self.ready.append(_popping(values[start:]))

    def close(self) -> None:
        """Cancel the calls not evaluated yet: the stream ends after what it handed out."""
        if self.source is not None:
            self.source.close()
        with self.cond:
            self.done = True
            self.ready.clear()
            self.current[:] = [_END]
            self.cond.notify_all()
        self.handle.remove()


class MapStream(itertools.chain[Any]):
    """The iterator of Executor.map(): ``next()``, ``close()``."""

    _run: MapRun

    def close(self) -> None:
        """Cancel the calls not evaluated yet; later next() calls raise StopIteration."""
        self._run.close()

    def __del__(self) -> None:
        # no lock here (it may run in any thread, at any point): the collector removes it
        run = self.__dict__.get("_run")
        if run is not None and not run.done:
            run.abandoned = True
            run.poke()


def make_stream(run: MapRun, rows: Iterator[Any] | None, end_time: float | None
                ) -> MapStream:
    # from_iterable makes a MapStream (the stub says chain): hence the ignore
    stream: MapStream = MapStream.from_iterable(  # type: ignore[assignment]
        _chunks(run, rows, end_time))
    stream._run = run
    return stream


def _chunks(run: MapRun, rows: Iterator[Any] | None, end_time: float | None
            ) -> Iterator[Iterator[Any]]:
    """The stream's source: one iterator per list of results (see the module docstring)."""
    consumed = 0
    while True:
        if rows is not None and consumed:
            rows = _push(run, rows, consumed)
        entry = _next_entry(run, end_time)
        if entry is None:
            return
        if type(entry) is Failure:
            consumed = 1
            yield _raising(entry.error)
        else:
            consumed = len(entry) - 1
            run.current = entry
            yield iter(entry.pop, _END)


def _next_entry(run: MapRun, end_time: float | None) -> Any:
    """The next list of results or error; None at the end; TimeoutError past
    ``end_time`` (the calls left are cancelled)."""
    with run.cond:
        while True:
            if run.ready:
                return run.ready.popleft()
            if run.error is not None:
                raise run.error
            if run.done:
                return None
            run.fetch()
            if run.ready or run.done:
                continue
            remaining = None if end_time is None else end_time - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            run.cond.wait(remaining)
    run.close()
    raise TimeoutError("map(): a result was not ready within the timeout")


def _push(run: MapRun, rows: Iterator[Any], count: int) -> Iterator[Any] | None:
    """``count`` more calls (one per result taken); None once the input ended."""
    assert run.source is not None
    batch = list(itertools.islice(rows, count))
    try:
        if batch:
            run.source.push_many(batch)
        if len(batch) < count:
            run.source.close()
            return None
    except RuntimeError:
        raise RuntimeError("cannot schedule new futures after shutdown") from None
    return rows


def _popping(values: list[Any]) -> list[Any]:
    """``values`` reversed, over _END: iter(list.pop, _END) hands them out in order."""
    values.reverse()
    values.insert(0, _END)
    return values


def _raising(error: BaseException) -> Iterator[Any]:
    raise error
    yield  # type: ignore[unreachable]  # a generator that raises when first advanced
