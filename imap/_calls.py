"""Calls as items, and a source that clients push to: what task queues, ``execute()`` and
the Executor hand an IMap.

    client threads --push(item)--> PushSource (batches, under a lock) --take(count)--> feeder
    feeder waiting for items (armed) <--wake()-- push() / close()

A call is ``(func, args, kwargs)``, ``(func, args)``, ``(func,)`` or anything callable
without arguments (a ``functools.partial``); ``run_call`` evaluates one in the worker.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .protocols import Wake

__all__ = ["PushSource", "check_call", "run_call", "take_from"]


def take_from(batches: collections.deque[list[Any]], count: int) -> list[Any]:
    """Up to ``count`` items from the front of a non-empty deque of batches (a whole batch
    is handed over without a copy; a part of one is copied)."""
    first = batches[0]
    if len(first) <= count:
        batches.popleft()
        if len(first) == count or not batches:
            return first
        taken = list(first)
        while batches and len(taken) < count:
            head = batches[0]
            room = count - len(taken)
            if len(head) <= room:
                taken += batches.popleft()
            else:
                taken += head[:room]
                batches[0] = head[room:]
        return taken
    batches[0] = first[count:]
    return first[:count]


def _make_run_call() -> Callable[[Any], Any]:
    # made in a function so that dill ships it by value: a remote server where imap is not
    # installed can load it
    def run_call(call: Any) -> Any:
        if type(call) is tuple:
            func = call[0]
            args = call[1] if len(call) > 1 else ()
            kwargs = call[2] if len(call) > 2 else {}
            return func(*args, **kwargs)
        return call()
    return run_call


#: evaluates one call (see the module docstring)
run_call = _make_run_call()


def check_call(call: object) -> None:
    """Refuse at once what run_call could not evaluate (TypeError)."""
    if type(call) is tuple:
        if not 1 <= len(call) <= 3 or not callable(call[0]):
            raise TypeError(f"a call is (func, args, kwargs), (func, args) or (func,) with a "
                            f"callable func, or a callable such as functools.partial: not "
                            f"{call!r}")
        if len(call) > 1 and not isinstance(call[1], (tuple, list)):
            raise TypeError(f"the args of a call must be a tuple or list, not "
                            f"{type(call[1]).__name__}")
        if len(call) > 2 and not isinstance(call[2], dict):
            raise TypeError(f"the kwargs of a call must be a dict, not "
                            f"{type(call[2]).__name__}")
    elif not callable(call):
        raise TypeError(f"a call is (func, args, kwargs) or a callable such as "
                        f"functools.partial, not {type(call).__name__}")


class PushSource:
    """A BatchSource that clients push items to, from any thread; ``close()`` ends it once
    what was pushed has been taken. Unbounded: whoever pushes bounds it (TaskQueue's
    ``size``, papy's run window).

    Items are kept as the batches they were pushed in (``push_many`` hands over its list:
    do not change it afterwards), so a batch taken whole is not copied. The consumer's wake
    is called only when it waited: after a ``take`` that found nothing, or left some.

    Example::

        source = PushSource()
        results = pool.add_task(str.upper, source)
        source.push_many(["a", "b"]); source.close()
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: collections.deque[list[Any]] = collections.deque()
        self._count = 0
        self._tail: list[Any] | None = None     # the last batch, ours: push() appends to it
        self._closed = False
        self._wake: Wake | None = None
        self._armed = False

    def push(self, item: Any) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the source is closed")
            if self._tail is None:
                self._tail = []
                self._batches.append(self._tail)
            self._tail.append(item)
            self._count += 1
            wake = self._take_wake()
        if wake is not None:
            wake()
            # hand the GIL over: the feeder waited for items, let it take this one now
            # (a pusher in a tight loop would otherwise keep it for the switch interval)
            time.sleep(0)

    def push_many(self, items: Iterable[Any]) -> None:
        batch = items if type(items) is list else list(items)
        if not batch:
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("the source is closed")
            self._batches.append(batch)
            self._count += len(batch)
            self._tail = None
            wake = self._take_wake()
        if wake is not None:
            wake()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            wake = self._wake
        if wake is not None:
            wake()

    def drain(self) -> list[Any]:
        """Take back every item not taken yet (e.g. to cancel them)."""
        with self._lock:
            items = [item for batch in self._batches for item in batch]
            self._batches.clear()
            self._count = 0
            self._tail = None
        return items

    def __len__(self) -> int:
        return self._count

    # -- BatchSource ------------------------------------------------------------------

    def take(self, count: int) -> list[Any] | None:
        with self._lock:
            if not self._count:
                if self._closed:
                    return None
                self._armed = True
                return []
            taken = take_from(self._batches, count)
            self._count -= len(taken)
            if self._tail is not None and (not self._batches
                                           or self._batches[-1] is not self._tail):
                self._tail = None       # handed out (a part left was copied)
            if self._count:
                self._armed = True
        return taken

    def notify(self, wake: Wake) -> None:
        with self._lock:
            self._wake = wake

    def _take_wake(self) -> Wake | None:
        """Under the lock: the wake to call, once, if the consumer waits for items."""
        if not self._armed:
            return None
        self._armed = False
        return self._wake
