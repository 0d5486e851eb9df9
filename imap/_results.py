"""What reading a task gives: ``TaskIterator`` (``add_task``/``get_task``) and the stream of
its results (``_ResultStream``, made by ``IMap._iterate``).

    IMap._batches  --plain batch: its list iterator (shared with next())--> _ResultStream
                   --a batch with errors, skips, tracking: one item per Task.take-->
    _ResultStream.__imap_read__  the ready part of the current batch, at C speed (a feeder of
                                 another IMap reading this task's results in bulk)
"""
from __future__ import annotations

import itertools

__all__ = ["TaskIterator"]


class _ResultStream(itertools.chain):
    """What iterating a task gives: a chain of its batches, marked as reading results of an
    IMap (a task whose input it is reads it before taking buffer slots).

    ``__imap_read__(count)``: the results that are ready, waiting only for the first, up to
    ``count`` ([] at the end; an item's exception is raised as by ``next``). A feeder of
    another IMap reads its input so (``imap._feeder``), in bulk and without delay."""

    __imap_chained__ = True

    def __imap_read__(self, count: int) -> list:
        imap, task_id = self._where
        items = self._ready(imap, task_id, count)
        if items:
            return items
        try:
            first = next(self)      # waits; loads the next batch; raises an item's error
        except StopIteration:
            return []
        return [first] + self._ready(imap, task_id, count - 1)

    @staticmethod
    def _ready(imap, task_id, count: int) -> list:
        """Up to ``count`` results of the current batch, if it is plain (no errors, no
        skips, no tracking), read at C speed from the iterator next() shares."""
        if count <= 0 or not imap.started:
            return []
        task = imap._running[task_id]
        if not task.plain():
            return []
        items = list(itertools.islice(task.cursor[1], count))
        if items and task.released() >= task.wake_at:
            imap._feeder.wake()
        return items


class TaskIterator:
    """The result iterator of one task of an IMap (returned by add_task and get_task)."""

    __slots__ = ("_imap", "task", "timeout", "block", "_record")
    __imap_chained__ = True     # an input that reads an IMap's results

    def __init__(self, imap, task: int, timeout=None, block=True, record=None):
        self._imap = imap
        self.task = task
        self.timeout = timeout
        self.block = block
        self._record = record      # the Task, when known: its figures outlive stop()

    def __iter__(self):
        return self._imap._iterate(self.task, self.timeout, self.block)

    def __next__(self):
        return self._imap.next(self.timeout, self.task, self.block)

    def next(self, timeout=None, block=None):
        """Like ``IMap.next`` for this task; defaults come from add_task()/get_task()."""
        return self._imap.next(self.timeout if timeout is None else timeout, self.task,
                               self.block if block is None else block)

    @property
    def time_waiting(self) -> float:
        """Seconds the readers of this task were blocked waiting for its results (in the
        run it was added for; still readable after stop())."""
        if self._record is not None:
            return self._record.time_waiting
        running = self._imap._running
        return running[self.task].time_waiting if self.task < len(running) else 0.0

    def __repr__(self) -> str:
        return f"<result iterator of task {self.task} of {self._imap.name}>"
