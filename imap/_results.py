"""What reading a task gives: ``TaskIterator`` (``add_task``/``get_task``: the task's handle
and result iterator) and the stream of its results (``_ResultStream``, made by iteration).

    IMap._batches  --plain batch: its list iterator (shared with next())--> _ResultStream
                   --a batch with errors, skips, tracking: one item per Task.take-->
    TaskIterator.take_ready   the results ready now, in bulk, never waiting (a scheduler,
                              a queue, another IMap's feeder), with notify(wake) to learn
                              when more arrived
"""
from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Literal, Self, TypeVar, overload

from .protocols import Results, Wake

if TYPE_CHECKING:
    from ._feeder import Feeder
    from ._imap import IMap
    from ._task import Task
    from ._task_cursor import Run

__all__ = ["TaskIterator"]

#: the type of a task's results (of task 0's, for an IMap)
R = TypeVar("R")


class _ResultStream(itertools.chain[Any]):
    """What iterating a task gives: a chain of its batches. ``_where`` is (imap, task):
    a task whose input it is reads the task's results with take_ready instead."""

    _where: tuple[ResultReading[Any], Task]


class ResultReading(Generic[R]):
    """The reading half of IMap: next(), iteration, and the checks TaskIterator uses."""

    name: str
    _feeder: Feeder | None

    @property
    def started(self) -> bool:
        raise NotImplementedError

    def _record(self, task: int) -> Task:
        raise NotImplementedError

    @overload
    def next(self, timeout: float | None = None, task: Literal[0] = 0,
             block: bool = True) -> R: ...

    @overload
    def next(self, timeout: float | None = None, task: int = 0, block: bool = True) -> Any: ...

    def next(self, timeout: float | None = None, task: int = 0, block: bool = True) -> Any:
        """The next result of task ``task`` (see the class docstring).

        Raises the item's exception in its place, TimeoutError when no result is ready
        within ``timeout`` seconds (``block=False``: at once), StopIteration at the end of
        the task (and on every later call), RuntimeError when the IMap is not started.
        Typed as the IMap's result type for task 0, as ``Any`` for the other tasks (their
        own handles, from add_task, carry their types).
        """
        if not self.started:
            raise RuntimeError(f"{self.name} is not started: add tasks, then call start() "
                               f"(after stop() the tasks are removed)")
        return self._take(self._record(task), timeout, block)

    def _live_record(self, task: Task) -> Task:
        """``task``, checking that it can be read now (the IMap runs, in its run)."""
        if not self.started or task.closed is not None:
            raise RuntimeError(f"{self.name} is not started: add tasks, then call start() "
                               f"(after stop() the tasks are removed)")
        return task

    def _take(self, task: Task, timeout: float | None, block: bool) -> Any:
        self._live_record(task)
        feeder = self._feeder
        assert feeder is not None
        return task.take(0 if not block else timeout, feeder.on_starving, feeder.wake)

    #: what next(imap) calls: task 0's result stream (set by IMap when task 0 is added)
    _next0: Callable[[], R]

    def __iter__(self) -> Self:
        return self

    # an iterator (iter(imap) is imap) over task 0; Python calls the stream's C-level
    # __next__ that the property returns, with no Python frame per item (the checker is
    # shown the method that this property stands for)
    if TYPE_CHECKING:
        def __next__(self) -> R: ...
    else:
        __next__ = property(operator.attrgetter("_next0"))

    def _iterate(self, task: Task, timeout: float | None, block: bool) -> Iterator[Any]:
        """Iteration over a task: the items of a plain batch are handed out by its list
        iterator at C speed (``chain`` asks _batches for the next iterator only once per
        batch); the first item of each batch and batches with errors go through Task.take.
        An exception (an item's error, a timeout, a stopped IMap) is raised by that call
        and the stream goes on (``_Raise``), as next() does."""
        stream = _ResultStream.from_iterable(self._batches(task, timeout, block))
        stream._where = (self, task)  # type: ignore[attr-defined]  # stub: chain, not ours
        return stream

    def _batches(self, task: Task, timeout: float | None, block: bool) -> Iterator[Any]:
        if not block:
            timeout = 0
        while True:
            try:
                self._live_record(task)
            except RuntimeError as exc:
                yield _Raise(exc)
                continue
            if task.plain():
                yield task.cursor[1]     # shared with next(): one position for both
            feeder = self._feeder
            try:
                if feeder is None:
                    self._live_record(task)
                assert feeder is not None
                value = task.take(timeout, feeder.on_starving, feeder.wake)
            except StopIteration:
                return
            except BaseException as exc:  # noqa: BLE001 - raised by this next(), in place
                yield _Raise(exc)
                continue
            yield (value,)


class _Raise:
    """An iterator that raises ``exc`` once, then ends: in a result stream (a ``chain``),
    the call that meets it raises, and the next call goes on with the next batch."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc: BaseException | None = exc

    def __iter__(self) -> _Raise:
        return self

    def __next__(self) -> Any:
        exc, self.exc = self.exc, None
        if exc is None:
            raise StopIteration
        raise exc


class TaskIterator(Generic[R]):
    """The handle of one task of an IMap, and its result iterator (from add_task, get_task).

    ``next()``/iteration wait for results; ``take_ready()`` never waits; ``notify(wake)``
    says when results arrived; ``remove()`` ends the task.
    """

    __slots__ = ("_imap", "_next", "_record", "block", "task", "timeout")

    def __init__(self, imap: IMap[Any], task: int, timeout: float | None = None,
                 block: bool = True, record: Task | None = None) -> None:
        self._imap = imap
        self.task = task
        self.timeout = timeout
        self.block = block
        self._record = record if record is not None else imap._record(task)
        self._next: Callable[[], R] = imap._iterate(self._record, timeout, block).__next__

    def __iter__(self) -> Self:
        return self

    # an iterator (iter(it) is it): Python calls the result stream's C-level __next__ that
    # the property returns, with no Python frame per item; next() shares its position (the
    # checker is shown the method that this property stands for)
    if TYPE_CHECKING:
        def __next__(self) -> R: ...
    else:
        __next__ = property(operator.attrgetter("_next"))

    def next(self, timeout: float | None = None, block: bool | None = None) -> R:
        """Like ``IMap.next`` for this task; defaults come from add_task()/get_task()."""
        if timeout is None and block is None:
            return self._next()
        value: R = self._imap._take(self._record, self.timeout if timeout is None else timeout,
                                    self.block if block is None else block)
        return value

    # -- the seam (imap.protocols) -------------------------------------------------------

    def take_ready(self, count: int | None = None) -> Results[R] | None:
        """The results ready now, without waiting: at most ``count`` (None: no limit), at
        least one if any is ready, maybe fewer than are ready (loop until ``values`` is
        empty). An item's exception sits in ``errors`` at its position (``None`` in
        ``values``). ``None``: the task ended and every result was taken. Taking gives the
        results' buffer slots back. RuntimeError when the IMap is not started."""
        runs = self._take_runs(count)
        if runs is None:
            return None
        if len(runs) == 1:
            return Results(runs[0][1], runs[0][2])
        values: list[R] = []
        errors: dict[int, BaseException] | None = None
        for _, run_values, run_errors in runs:
            if run_errors:
                errors = errors if errors is not None else {}
                base = len(values)
                errors.update((base + position, exc) for position, exc in run_errors.items())
            values.extend(run_values)
        return Results(values, errors)

    def _take_runs(self, count: int | None) -> list[Run] | None:
        """take_ready with the index of each result: runs of (first index, values, errors)."""
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 1):
            raise ValueError(f"count must be an int >= 1 or None, not {count!r}")
        record = self._imap._live_record(self._record)
        runs = record.take_runs(count)
        if runs:
            record.wake_feeder_if_due()
        return runs

    def notify(self, wake: Wake) -> None:
        """Call ``wake()`` (from the IMap's threads, holding no imap lock) whenever results
        of this task were delivered, when the task ends, and when the IMap stops. One
        callback per task: this replaces an earlier one."""
        if not callable(wake):
            raise TypeError(f"wake must be callable, not {type(wake).__name__}")
        self._record.wake = wake

    def remove(self) -> None:
        """Remove the task: before start() it is taken out of the IMap; while it runs it
        ends at once (its input is no longer read, results not taken are dropped, its buffer
        slots come back); after stop() nothing happens. Idempotent."""
        self._imap._remove(self._record)

    # -- figures -------------------------------------------------------------------------

    @property
    def time_waiting(self) -> float:
        """Seconds the readers of this task were blocked waiting for its results (in the
        run it was added for; still readable after stop())."""
        return self._record.time_waiting

    def __repr__(self) -> str:
        return f"<result iterator of task {self.task} of {self._imap.name}>"
