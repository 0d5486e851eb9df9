"""One task of an IMap: its input, its results as they arrive, and the reader's cursor.

Who touches what:

    feeder thread    fed, total, batch_size/tracked choice     (writes; the only writer)
    slot threads     arrived (under cond), item_time            (deliver finished batches)
    the consumer     cursor (cur_*, pos, next_start, done_before, adjust), skipped, finished
                     (one consumer thread at a time per task; next(), iteration and
                     take_runs/take_ready share it)
    anyone           wakes: ``wake`` (TaskIterator.notify) and ``listeners`` (the feeders of
                     tasks that read this one), called holding no lock after a delivery,
                     at the end of the input, at removal and at stop
    inline IMaps     ``fill`` (imap._inline): the consumer evaluates what it is about to
                     wait for, in its own thread, before it waits (take, take_runs)

The consumer's side (the cursor, taking results, the slot accounting ``released()``) is the
base class ``TaskCursor`` in ``_task_cursor.py``; this module holds the input and result
sides.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Any
from collections.abc import Callable

from ._task_cursor import Fill, TaskCursor
from .backends.base import TaskSpec
from .protocols import Wake

log = logging.getLogger(__name__)

#: an adaptive batch aims to keep a worker busy this long (seconds)
TARGET_BATCH_SECONDS = 0.01
#: ... and to move at most about this many bytes (pickles and shared memory, both ways)
TARGET_BATCH_BYTES = 4 << 20
#: items slower than this are evaluated one by one with progress tracking, so a worker's
#: death is blamed on exactly the item it was evaluating
TRACK_ABOVE_SECONDS = 50e-6
TRACK_UP_TO_ITEMS = 16
#: the weight of a new measurement of the time per item in its moving average (``learn``)
FASTER_WEIGHT = 0.7
SLOWER_WEIGHT = 0.3


class Task(TaskCursor):
    """Bookkeeping of one (function, input) task of an IMap.

    The input is ``source`` (a BatchSource: the user's, or an IterableSource the IMap made,
    ``own_source``) or ``upstream`` (another task whose results this task reads: a chain).
    """

    def __init__(self, task_id: int, spec: TaskSpec, *, source: Any = None,
                 upstream: Task | None = None, own_source: bool = False,
                 ordered: bool = True, skip: bool = False, timeout: float | None = None,
                 block: bool = True, track: bool = False,
                 batch_size: int | None = None) -> None:
        self.id = task_id
        self.spec = spec
        self.source = source
        self.upstream = upstream
        self.own_source = own_source
        self.ordered = ordered
        self.skip = skip
        self.timeout = timeout
        self.block = block
        self.track = track
        self.tracked_results: dict[int, Any] | None = {} if track else None
        # feeder side
        self.fed = 0
        self.total: int | None = None
        self.batch_size = batch_size or 1
        self.fixed_batch = batch_size is not None   # given: never adapted
        self.item_time: float | None = None
        self.item_bytes: float | None = None
        # result side
        self.cond = threading.Condition(threading.Lock())
        self.arrived: Any = {} if ordered else collections.deque()
        self.closed: BaseException | None = None   # set when the IMap stops
        self.removed = False                        # set by TaskIterator.remove()
        self.wake: Wake | None = None               # TaskIterator.notify()
        self.listeners: list[Wake] = []             # feeders reading this task's results
        self.release_wake: Callable[[], None] | None = None   # the feeder's, while running
        self.fill: Fill | None = None               # an inline IMap's, while running
        super().__init__()   # the cursor (TaskCursor)

    def __repr__(self) -> str:
        return f"<Task {self.id} fed={self.fed} total={self.total}>"

    # -- feeder side ---------------------------------------------------------------------

    def next_batch_size(self, cap: int) -> int:
        if self.fixed_batch:
            return self.batch_size
        return max(1, min(self.batch_size, cap))

    def tracked_mode(self, batch_length: int) -> bool:
        """Evaluate item by item, recording the position? Yes for short batches and slow
        items, where the cost is nil; long batches of fast items run in C instead."""
        return (batch_length <= TRACK_UP_TO_ITEMS or self.item_time is None
                or self.item_time > TRACK_ABOVE_SECONDS or self.spec.item_timeout is not None)

    def learn(self, n_items: int, elapsed: float, cap: int, nbytes: int = 0) -> None:
        """Adapt the batch size to the measured time (and bytes) per item (slot threads)."""
        if n_items <= 0:
            return
        per_item = max(elapsed / n_items, 1e-7)
        previous = self.item_time
        if previous is None:
            self.item_time = per_item
        else:
            # a faster batch weighs more than a slower one: the first batches on each
            # worker pay for its start (imports, opening files), which must not keep
            # the batches small and tracked for long; a slower one still counts at once
            fresh = FASTER_WEIGHT if per_item < previous else SLOWER_WEIGHT
            self.item_time = (1 - fresh) * previous + fresh * per_item
        wanted = int(TARGET_BATCH_SECONDS / self.item_time)
        if nbytes:
            per_item_bytes = nbytes / n_items
            previous = self.item_bytes
            self.item_bytes = (per_item_bytes if previous is None
                               else 0.7 * previous + 0.3 * per_item_bytes)
            wanted = min(wanted, int(TARGET_BATCH_BYTES / self.item_bytes))
        if not self.fixed_batch:
            # grow at most 4x per step so one fast batch does not flood the workers
            self.batch_size = max(1, min(wanted, cap, max(1, self.batch_size) * 4))

    def end_input(self) -> None:
        """The feeder read the whole input: ``fed`` is the total (feeder thread)."""
        with self.cond:
            self.total = self.fed
            self.cond.notify_all()
        self.signal()

    # -- result side (slot threads), end and removal -------------------------------------

    def deliver(self, start: int, values: list[Any],
                errors: dict[int, BaseException] | None) -> None:
        with self.cond:
            if self.removed:
                return
            if self.ordered:
                self.arrived[start] = (values, errors)
            else:
                self.arrived.append((start, values, errors))
            self.cond.notify_all()
        self.signal()

    def signal(self) -> None:
        """Call the wakes (results arrived, the task ended or stopped); holds no lock."""
        wake = self.wake
        if wake is not None:
            _call(wake, self)
        for listener in tuple(self.listeners):
            _call(listener, self)

    def close(self, reason: BaseException) -> None:
        """Wake every reader: the IMap is stopping."""
        with self.cond:
            self.closed = reason
            self.cond.notify_all()
        self.signal()

    def remove(self) -> None:
        """The task ends at once: results not taken are dropped, readers see its end."""
        with self.cond:
            self.removed = True
            self.arrived.clear()
            self.cond.notify_all()
        self.signal()


def _call(wake: Wake, task: Task) -> None:
    try:
        wake()
    except Exception:  # a consumer's bug must not stop the delivering thread
        log.exception("a wake callback of task %d raised", task.id)
