"""The reader's side of a Task: a cursor over the batches that arrived, and the ways the
consumer takes results from it (next(), iteration, ``take_ready``/``take_runs``).

``TaskCursor`` is a base class of ``imap._task.Task``: it owns the cursor state (set up by
its ``__init__``) and reads the task's input and result state, which ``Task`` owns (declared
below). Only the consumer moves the cursor (one consumer thread at a time per task); the
feeder reads ``released()`` and sets ``wake_at``; an inline IMap's ``fill`` evaluates what the
consumer is about to wait for, in the consumer's thread, before it waits (take, take_runs).

Slot accounting: every item index holds one buffer slot from the moment the feeder pulls it
until the consumer takes its result (or drops it after a timeout with skip). ``released()``
counts the slots given back; the feeder computes the free slots from it.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from ._task import Task

_NEVER = math.inf

#: (index of the first result, values, None or {position in values: exception})
Run = tuple[int, list[Any], "dict[int, BaseException] | None"]
OnStarving = Callable[[int, "Task"], None]
#: fill(task, count, timeout): evaluate up to ``count`` items (None: a stride) of the task's
#: input now, waiting up to ``timeout`` for the input (None: no limit); returns time left
Fill = Callable[["Task", "int | None", "float | None"], "float | None"]


class TaskCursor:
    """The consumer's cursor over the results of one task (a base class of ``Task``, the
    only class made from it: ``cast("Task", self)`` where a callback wants the task)."""

    # owned by Task (imap._task), read here
    id: int
    ordered: bool
    skip: bool
    fed: int
    total: int | None
    cond: threading.Condition
    arrived: Any                  # {start: (values, errors)} if ordered, else a deque
    closed: BaseException | None
    removed: bool
    tracked_results: dict[int, Any] | None
    release_wake: Callable[[], None] | None
    fill: Fill | None

    def __init__(self) -> None:
        # The cursor is (values, iterator over values): iteration hands out a
        # plain batch at C speed with ``yield from``, and next() uses the same iterator, so
        # both see one position: len(values) - iterator.__length_hint__().
        # released slots = done_before + consumed in the cursor + adjust; the feeder reads
        # done_before first, the reader replaces the cursor before adding to done_before,
        # so a racing read can only under-count (delaying the feeder, never overfilling).
        self.cursor: tuple[list[Any], Any] = ([], iter(()))
        self.cur_errors: dict[int, BaseException] | None = None
        self.cur_start = 0
        self.next_start = 0
        self.done_before = 0       # items consumed in earlier batches (handed out or dropped)
        self.adjust = 0            # +1 per position given up at a timeout, -1 per late drop
        self.wake_at: float = _NEVER   # the feeder wants a wake-up when released() reaches it
        self.skipped: set[int] = set()  # ordered + skip: indices dropped after a timeout
        self.skip_pending = 0      # unordered + skip: results still to drop
        self.finished = False
        self.time_waiting = 0.0    # seconds readers were blocked waiting for a result

    def position(self) -> int:
        """How many items of the current batch were consumed."""
        values, iterator = self.cursor
        left: int = iterator.__length_hint__()
        return len(values) - left

    def released(self) -> int:
        """Buffer slots this task gave back (see the comment in __init__)."""
        done = self.done_before
        return done + self.position() + self.adjust

    def plain(self) -> bool:
        """True when the current batch can be handed out without per-item bookkeeping."""
        return (self.cur_errors is None and not self.skipped and not self.skip_pending
                and self.tracked_results is None)

    def awaited_index(self) -> int:
        """Ordered: the index the reader waits for (the first one not skipped)."""
        values, iterator = self.cursor
        left = iterator.__length_hint__()
        index = self.cur_start + len(values) - left if left else self.next_start
        while index in self.skipped:
            index += 1
        return index

    def starving(self) -> bool:
        """True when the awaited result has not even been submitted yet."""
        if self.ordered:
            return self.awaited_index() >= self.fed
        return self.done_before + self.position() + self.skip_pending >= self.fed

    def at_end(self) -> bool:
        if self.removed:
            return True
        total = self.total
        if total is None:
            return False
        if self.ordered:
            return self.awaited_index() >= total
        return self.done_before + self.position() >= total

    def load_next_batch(self) -> bool:
        """Move the cursor to the next arrived batch; False when none is there (under cond)."""
        if self.ordered:
            batch = self.arrived.pop(self.next_start, None)
            if batch is None:
                return False
            start = self.next_start
            values, errors = batch
            self.next_start += len(values)
        else:
            if not self.arrived:
                return False
            start, values, errors = self.arrived.popleft()
        done = len(self.cursor[0])
        self.cur_errors, self.cur_start = errors, start
        self.cursor = (values, iter(values))  # first: a racing released() under-counts only
        self.done_before += done
        return True

    def drop_after_timeout(self) -> None:
        """skip=True: give up the awaited position and release its slot now."""
        if self.ordered:
            self.skipped.add(self.awaited_index())
        else:
            self.skip_pending += 1
        self.adjust += 1

    def wait_for_batch(self, timeout: float | None, on_starving: OnStarving) -> None:
        """Block until a batch arrived, the task ended, or the timeout passed (under cond).

        Raises StopIteration at the end, TimeoutError on timeout, RuntimeError when the IMap
        stopped. ``on_starving(+1/-1)`` tells the feeder that this reader waits for an item
        that is not submitted yet (it then submits smaller batches instead of waiting for
        a full batch's worth of free buffer slots).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.load_next_batch():
            if self.closed is not None:
                raise RuntimeError(f"the IMap was stopped ({self.closed})")
            if self.at_end():
                self.finished = True
                raise StopIteration
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no result of task {self.id} within {timeout} s")
            # about to block: tell the feeder (it may be waiting for slots this reader
            # gave back without a per-item wake-up), and whether we starve
            starving = self.starving()
            on_starving(1 if starving else 0, cast("Task", self))
            waited = time.monotonic()
            try:
                self.cond.wait(remaining)
            finally:
                self.time_waiting += time.monotonic() - waited
                if starving:
                    on_starving(-1, cast("Task", self))

    def take(self, timeout: float | None, on_starving: OnStarving,
             wake_feeder: Callable[[], None]) -> Any:
        """Hand out the next result (the consumer's slow path: errors, skips, tracking)."""
        if self.finished:
            raise StopIteration
        while True:
            values, iterator = self.cursor
            left = iterator.__length_hint__()
            if left:
                position = len(values) - left
                index = self.cur_start + position
                if self._drop_late(index):
                    self.adjust -= 1        # before consuming: its slot was given back already
                    next(iterator)
                    continue
                result = next(iterator)
                if self.wake_at is not _NEVER and self.released() >= self.wake_at:
                    wake_feeder()
                errors = self.cur_errors
                if errors is not None and position in errors:
                    result = errors[position]
                    if self.tracked_results is not None:
                        self.tracked_results[index] = result
                    raise result
                if self.tracked_results is not None:
                    self.tracked_results[index] = result
                return result
            if self.fill is not None and not self.arrived:
                timeout = self.fill(cast("Task", self), 1, timeout)
            with self.cond:
                try:
                    self.wait_for_batch(timeout, on_starving)
                except TimeoutError:
                    if self.skip:
                        self.drop_after_timeout()  # lock order: task.cond, then the slots
                        if self.released() >= self.wake_at:
                            wake_feeder()
                    raise
            if self.released() >= self.wake_at:
                wake_feeder()

    def take_runs(self, count: int | None) -> list[Run] | None:
        """The results ready now, without waiting: at most ``count`` (None: no limit), as
        runs of consecutive indices; [] when none is ready; None at the end (and on every
        later call). A whole plain batch is handed over without copying. Gives the slots
        back; the caller wakes the feeder (``wake_feeder_if_due``)."""
        if self.finished or self.removed or self.closed is not None:
            self.finished = True
            return None
        runs: list[Run] = []
        remaining = math.inf if count is None else count
        while remaining > 0:
            values, iterator = self.cursor
            left = iterator.__length_hint__()
            if not left:
                if self.fill is not None and not runs and not self.arrived:
                    self.fill(cast("Task", self), None if count is None else int(remaining), 0.0)
                with self.cond:
                    if self.load_next_batch():
                        continue
                    if not runs and self.at_end():
                        self.finished = True
                        return None
                break
            position = len(values) - left
            if self.plain():
                taken = int(min(left, remaining))
                chunk = values if taken == len(values) else values[position:position + taken]
                iterator.__setstate__(position + taken)
                runs.append((self.cur_start + position, chunk, None))
                remaining -= taken
            else:
                remaining -= self._take_slowly(runs, int(min(left, remaining)))
            if not self.cursor[1].__length_hint__():
                self._drop_cursor()
        return runs

    def _drop_cursor(self) -> None:
        """The current batch was handed out: forget it, so that the task keeps no reference
        to results its reader has (the accounting moves to done_before, as when the next
        batch is loaded: cursor first, so a racing released() under-counts only)."""
        done = len(self.cursor[0])
        self.cursor = ([], iter(()))
        self.cur_errors = None
        self.done_before += done

    def _take_slowly(self, runs: list[Run], count: int) -> int:
        """Up to ``count`` positions of the current batch, one by one (errors, skips,
        tracking), appended to ``runs``. Returns how many results were handed out."""
        values, iterator = self.cursor
        errors, tracked = self.cur_errors, self.tracked_results
        handed, run_start = 0, 0
        run_values: list[Any] = []
        run_errors: dict[int, BaseException] | None = None
        for _ in range(count):
            left = iterator.__length_hint__()
            if not left:
                break
            position = len(values) - left
            index = self.cur_start + position
            if self._drop_late(index):
                self.adjust -= 1        # before consuming: its slot was given back already
                next(iterator)
                continue
            result = next(iterator)
            failed = errors is not None and position in errors
            if failed:
                result = errors[position]  # type: ignore[index]  # not None when failed
            if tracked is not None:
                tracked[index] = result
            if not run_values or index != run_start + len(run_values):
                if run_values:
                    runs.append((run_start, run_values, run_errors))
                run_start, run_values, run_errors = index, [], None
            if failed:
                run_errors = run_errors if run_errors is not None else {}
                run_errors[len(run_values)] = result
                run_values.append(None)
            else:
                run_values.append(result)
            handed += 1
        if run_values:
            runs.append((run_start, run_values, run_errors))
        return handed

    def wake_feeder_if_due(self) -> None:
        """After results were taken: wake the feeder if it waits for these slots."""
        if self.wake_at is not _NEVER and self.released() >= self.wake_at:
            wake = self.release_wake
            if wake is not None:
                wake()

    def _drop_late(self, index: int) -> bool:
        """A result whose position was given up after a timeout arrives: drop it."""
        if self.ordered:
            if self.skipped and index in self.skipped:
                self.skipped.discard(index)
                return True
            return False
        if self.skip_pending:
            self.skip_pending -= 1
            return True
        return False
