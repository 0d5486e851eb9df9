"""What a task reads, as the feeder sees it (``Task.source`` or ``Task.upstream``):

    another task's results (a TaskIterator, an IMap: its task 0, or iterating either)
        --> upstream: the feeder reads it with take_ready, never waiting (a chain)
    a BatchSource (imap.protocols)            --> read as it is
    a steady in-memory iterable (list, range, dict view, zip/map/enumerate of them)
        --> an IterableSource that reads it in bulk in the feeder thread
    any other iterable (generator, file, socket, queue, a zip of task results, ...)
        --> an IterableSource with a reader thread
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._results import TaskIterator, _ResultStream
from ._sources import IterableSource, inner_iterators, is_steady
from .protocols import is_batch_source

if TYPE_CHECKING:
    from ._task import Task


def upstream_of(iterable: object) -> Task | None:
    """The task whose results ``iterable`` reads directly, or None."""
    if isinstance(iterable, TaskIterator):
        return iterable._record
    if isinstance(iterable, _ResultStream):
        return iterable._where[1]
    from ._imap import IMap
    if isinstance(iterable, IMap):
        return iterable._record(0)
    return None


def make_source(iterable: object, task_id: int, name: str, read_ahead: int,
                known: dict[int, tuple[object, Any]], in_caller: bool = False
                ) -> tuple[Any, bool]:
    """(the BatchSource of a task that is not a chain, True when the IMap made it).

    ``known`` maps id(iterator) to (iterator, its IterableSource) for the tasks of the run:
    tasks given the same iterator share one source, and take turns on it (in the weave).
    ``in_caller``: the source reads in its caller's thread (an inline IMap: no reader thread).
    """
    if is_batch_source(iterable):
        return iterable, False
    try:
        iterator = iter(iterable)  # type: ignore[call-overload]  # any object: may raise
    except TypeError:
        raise TypeError(f"task {task_id}: the iterable is not iterable "
                        f"({type(iterable).__name__}); pass a list, a generator, a "
                        f"BatchSource or another task's result iterator") from None
    shared = known.get(id(iterator))
    if shared is not None and shared[0] is iterator:
        return shared[1], True
    source: IterableSource[Any] = IterableSource(iterator, read_ahead=read_ahead,
                                                 name=f"{name}-task-{task_id}",
                                                 in_caller=in_caller)
    known[id(iterator)] = (iterator, source)
    return source, True


def _is_steady(iterator: object) -> bool:
    """An in-memory iterator read in bulk (see imap._sources.is_steady)."""
    return is_steady(iterator)


def _is_chained(iterable: object) -> bool:
    """Does this input read results of an IMap (directly or behind zip/map/enumerate)?"""
    if upstream_of(iterable) is not None:
        return True
    return any(_is_chained(part) for part in inner_iterators(iterable))
