"""Task queues (papyros's dispatcher API) on an IMap: ``IMap.queue(func)``.

    client --push(item)--> PushSource --feeder--> the queue's IMap task --> workers
    client <--pop()/pop_many()-- ready results <--take_runs-- the task's results
                                 (a wake from the IMap notifies self._cond)

One IMap task per queue, added while the pool runs (or before it starts); every client can
have its own queue on one long-lived pool. ``size`` bounds the items pushed and not yet
popped: push() blocks (or times out) until results are popped.

Life cycle: open --close()--> closed (push refused; pop drains what is left, then
StopIteration) --every result popped, or release()/the queue collected--> the task is
removed from the IMap.
"""
from __future__ import annotations

import collections
import threading
import time
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ._calls import PushSource, check_call, run_call
from ._config import count as _count

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._imap import IMap
    from ._results import TaskIterator

__all__ = ["QueueClosedError", "TaskQueue"]


class QueueClosedError(RuntimeError):
    """push() on a TaskQueue that was closed."""


class _Failure:
    """An error result in the queue's ready list (never user data)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Notify:
    """The task's wake: notifies the queue's condition (and holds no reference to the
    queue, so that a queue nobody references can be collected)."""

    __slots__ = ("cond",)

    def __init__(self, cond: threading.Condition) -> None:
        self.cond = cond

    def __call__(self) -> None:
        with self.cond:
            self.cond.notify_all()


class TaskQueue:
    """A queue of work on an IMap pool: ``push`` items, ``pop`` results (see the module
    docstring and docs/queues.md).

    Example::

        with IMap(worker_type="thread", worker_num=2) as pool:
            with pool.queue(abs, size=100) as queue:
                for x in (-1, -2, -3):
                    queue.push(x)
                print(sorted(queue.pop() for _ in range(3)))    # [1, 2, 3]
    """

    def __init__(self, imap: IMap[Any], func: Callable[..., Any] | None = None, *,
                 size: int | None = None, ordered: bool = False) -> None:
        self.size = _count("size", size, None, minimum=1)
        self._calls = func is None
        self._source = PushSource()
        # reentrant: removing the task (at the end, under it) calls the task's wake here
        self._cond = threading.Condition(threading.RLock())
        self._pushed = 0
        self._popped = 0
        self._closed = False
        self._ended = False
        self._ready: collections.deque[Any] = collections.deque()
        self._handle: TaskIterator[Any] = imap.add_task(run_call if func is None else func,
                                                   self._source, ordered=bool(ordered))
        self._record = self._handle._record
        self._handle.notify(_Notify(self._cond))
        self._finalizer = weakref.finalize(self, _release, self._handle, self._source)

    # -- push ---------------------------------------------------------------------------

    def push(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """Queue one item: ``push(item)``; on a queue of calls (``func=None``)
        ``push(callable, *args, **kwargs)``. Blocks while ``size`` items are pushed and not
        yet popped; TimeoutError after ``timeout`` seconds. QueueClosedError after close().
        (``timeout`` is the queue's: give a function that takes one as a partial.)"""
        if self._calls:
            if not args:
                raise TypeError("push(callable, *args, **kwargs) needs a callable")
            item: Any = (args[0], args[1:], kwargs)
            check_call(item)
        elif len(args) != 1 or kwargs:
            raise TypeError(f"push(item) takes one item (given {len(args)} positional "
                            f"and {len(kwargs)} keyword arguments); a queue made with "
                            f"func=None takes calls")
        else:
            item = args[0]
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise QueueClosedError("push() on a closed TaskQueue")
                if self.size is None or self._pushed - self._popped < self.size:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"the queue holds {self.size} items not popped yet "
                                       f"(its size) after {timeout} s")
                self._cond.wait(remaining)
            self._pushed += 1
            self._source.push(item)

    def close(self) -> None:
        """No more pushes (QueueClosedError); pop() drains what is left, then raises
        StopIteration. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._source.close()

    def release(self) -> None:
        """Close the queue and take its task off the pool now: results not popped yet
        are dropped. What leaving a ``with`` block does; also done when the queue is
        collected without being closed."""
        self.close()
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    # -- pop ------------------------------------------------------------------------------

    def pop(self, timeout: float | None = None) -> Any:
        """One result (completion order, or push order if ``ordered``); an item's error is
        raised here, in its place. TimeoutError when none is ready within ``timeout``
        seconds (the result can still be popped later); StopIteration once the queue is
        closed and every result was popped."""
        with self._cond:
            self._wait_ready(timeout)
            return self._pop_one()

    def pop_many(self, timeout: float | None = None, max: int | None = None  # noqa: A002
                 ) -> list[Any]:
        """Wait (at most ``timeout`` seconds, then TimeoutError) until a result is ready,
        and return every result ready then, up to ``max``. An error ends the list just
        before it, and the next pop()/pop_many() raises it (at once when it comes first).
        StopIteration once the queue is closed and every result was popped."""
        limit = _count("max", max, None, minimum=1)
        with self._cond:
            self._wait_ready(timeout)
            self._fetch()
            results = [self._pop_one()]
            while self._ready and (limit is None or len(results) < limit):
                if type(self._ready[0]) is _Failure:
                    break
                results.append(self._pop_one())
            return results

    def __iter__(self) -> TaskQueue:
        return self

    def __next__(self) -> Any:
        return self.pop()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<TaskQueue task {self._handle.task} of {self._handle._imap.name}: "
                f"{self._pushed} pushed, {self._popped} popped, {state}>")

    # -- under self._cond --------------------------------------------------------------------

    def _wait_ready(self, timeout: float | None) -> None:
        """Block until a result is ready; StopIteration at the end; TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            if not self._fetch():
                if self._ended:
                    raise StopIteration
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no result ready within {timeout} s")
                self._cond.wait(remaining)

    def _fetch(self) -> bool:
        """Move the task's ready results to self._ready; False when there were none."""
        record = self._record
        if record.closed is not None:
            raise RuntimeError(f"the IMap of this queue was stopped ({record.closed}); "
                               f"results not popped are lost")
        if self._ended:
            return False
        runs = record.take_runs(None)
        if runs is None:
            self._ended = True
            self._finalizer()               # every result popped: free the pool's task
            return False
        for _, values, errors in runs:
            if errors is None:
                self._ready.extend(values)
                continue
            for position, value in enumerate(values):
                error = errors.get(position)
                self._ready.append(value if error is None else _Failure(error))
        if runs:
            record.wake_feeder_if_due()
        return bool(runs)

    def _pop_one(self) -> Any:
        entry = self._ready.popleft()
        self._popped += 1
        if self.size is not None:
            self._cond.notify_all()         # a pusher may go on
        if type(entry) is _Failure:
            raise entry.error
        return entry


def _release(handle: TaskIterator[Any], source: PushSource) -> None:
    source.close()
    handle.remove()
