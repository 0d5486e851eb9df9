"""The typed seam between an IMap and the code that feeds it or reads it in bulk.

A library that hands an IMap its own inputs (papy's run layer, task queues, an Executor)
implements ``BatchSource``; a task function that evaluates whole batches where it runs
implements ``BatchFunction``; ``TaskIterator.take_ready()`` returns ``Results``.

    your thread --push--> your BatchSource --take(count)--> IMap feeder --> workers
         ^                       | wake() when items may be ready            |
         |                       v                                           v
         +--take_ready()-- TaskIterator <--notify(wake): results delivered-- slots

Nothing here blocks: ``take`` returns what is ready, ``take_ready`` returns what has
arrived, and each side says "there may be more now" with a ``Wake`` callback. See
docs/imap.md, "Feeding an IMap from your own sources", for a runnable example.
"""
from __future__ import annotations

from typing import Generic, NamedTuple, Protocol, TypeVar, runtime_checkable
from collections.abc import Callable

__all__ = ["BatchFunction", "BatchSource", "Results", "Wake"]

T = TypeVar("T")
R = TypeVar("R")

#: a callback that only sets a flag and notifies a condition; callable from any thread
Wake = Callable[[], None]


@runtime_checkable
class BatchSource(Protocol[T]):
    """An input that an IMap reads in batches without ever blocking its feeder.

    ``take(count)`` returns up to ``count`` (>= 1) items that are ready now, without
    waiting: ``[]`` when nothing is ready yet (the source then calls the wake registered
    with ``notify`` once there may be), ``None`` once it has ended and every item was
    taken. An exception raised by ``take`` is the error of the next position: the IMap
    records it in that place and goes on taking.

    ``notify(wake)`` registers ``wake`` (replacing an earlier one); the source calls it,
    from any thread and holding none of its own locks, whenever items may have become
    ready after a ``take`` returned ``[]`` (or fewer than asked), and when it ends.
    Calling it too often is allowed; never calling it leaves the task waiting.
    """

    def take(self, count: int) -> list[T] | None: ...

    def notify(self, wake: Wake) -> None: ...


class BatchFunction(Protocol[T, R]):
    """A task function that also evaluates whole batches where it runs.

    ``call_batch(items)`` returns ``(values, errors)``: one value per item (``None`` where
    an error is) and ``None`` or ``{position: exception}``. An exception raised by
    ``call_batch`` itself is every item's error. Batches that the IMap evaluates item by
    item (the first small ones, slow items, ``item_timeout``) call the function per item,
    so it must be callable too.
    """

    def __call__(self, item: T) -> R: ...

    def call_batch(self, items: list[T]) -> tuple[list[R], dict[int, BaseException] | None]:
        ...


class Results(NamedTuple, Generic[R]):
    """What ``TaskIterator.take_ready()`` returns: ready results in the task's order, and
    ``None`` or ``{position in values: exception}`` (``None`` in ``values`` there)."""

    values: list[R]
    errors: dict[int, BaseException] | None


def is_batch_source(obj: object) -> bool:
    """Does ``obj``'s class have callable ``take`` and ``notify`` (structurally a
    BatchSource)? Looked up on the class, as Python looks up protocols."""
    kind = type(obj)
    return callable(getattr(kind, "take", None)) and callable(getattr(kind, "notify", None))
