"""Buffer slots and pacing of the feeder (the half of ``Feeder`` that other threads call).

    readers --released() counts, wake() when past wake_at, on_starving()--+
    Pool slot threads --delivered(batch)------------------------------------+--> self._cond
    sources and upstream tasks --poke()-------------------------------------+    (_events += 1)

State under ``self._cond``: ``_held`` (slots taken by the feeder: items fed, read-ahead
reserved for a reader thread, upstream results dealt to a chained task), ``_in_flight``
(batches submitted and not delivered), ``_starving`` and ``_starving_on`` (readers blocked
waiting for an item not fed yet), ``_events`` (a counter every wake-up bumps: an idle feeder
waits for it to change). Free slots = buffer - held + the released() counts of the tasks.

A task holds at most its share: the buffer less one stride per other task still reading its
input, never less than one stride. Overdraft (one slot past the buffer) only after a round
fed nothing, with nothing in flight, for the task a starving reader waits for (or a task
upstream of it), with a warning: the reader breaks rule 5 of docs/imap.md.
"""
from __future__ import annotations

import logging
import math
import threading
import time
import warnings

from ._feeds import Feed
from ._task import Task
from .backends.base import Batch

log = logging.getLogger(__name__)
#: with nothing in flight, a task short of slots for a full batch waits this long (seconds)
#: for a reader to give more back before it sends a smaller batch
FULLER_BATCH_WAIT = 0.005


class SlotAccounting:
    """The buffer accounting and the wake-ups of one Feeder (see the module docstring)."""

    batch_cap: int        # set by the Feeder

    def __init__(self, name: str, stride: int, buffer_size: int, workers: int) -> None:
        self.name = name
        self.stride = stride
        self.buffer_size = buffer_size
        self.byte_budget: int | None = None    # set for a default buffer (imap._imap)
        self.max_in_flight = 2 * workers
        self.stopping = False
        self._cond = threading.Condition(threading.Lock())
        self._events = 0                 # bumped by every wake-up: the idle feeder's clock
        self._idle = False
        self._waiting_room = False
        self._held = 0
        self._starving = 0
        self._starving_on: dict[Task, int] = {}      # task -> readers blocked, starving
        self._in_flight = 0
        self._overdrawn = False
        self._added: list[Task] = []
        self._removed: list[Task] = []
        # feeder thread only
        self._feeds: list[Feed] = []
        self._feed_of: dict[Task, Feed] = {}
        self._accounted: tuple[Task, ...] = ()       # tasks whose released() counts
        self._missing: int | None = None             # slots a blocked turn lacked
        self._stalled = 0                            # rounds in a row that fed nothing
        self._feeding = 0                            # tasks still reading their input

    def used(self) -> int:
        """Buffer slots in use: items read and not yet taken (a lock-free snapshot)."""
        return max(0, self._held - sum(t.released() for t in self._accounted))

    # -- wake-ups (any thread) ---------------------------------------------------------------

    def _event(self) -> None:
        """Under _cond: something changed; an idle feeder looks again."""
        self._events += 1
        if self._idle or self._waiting_room:
            self._cond.notify_all()

    def poke(self) -> None:
        """Something may be ready to feed (a source's wake, an upstream's results)."""
        with self._cond:
            self._event()

    def wake(self) -> None:
        """A reader gave back the slots the feeder waits for."""
        with self._cond:
            self._event()
        # hand the GIL over now: a consumer busy in a tight loop would otherwise keep it for
        # the whole switch interval (5 ms) and drain the pipeline before the feeder refills it
        time.sleep(0)

    def on_starving(self, delta: int, task: Task) -> None:
        """A reader of ``task`` is about to block (delta 1: starving, 0: not) or woke up
        (-1)."""
        with self._cond:
            self._starving += delta
            if delta:
                count = self._starving_on.get(task, 0) + delta
                if count > 0:
                    self._starving_on[task] = count
                else:
                    self._starving_on.pop(task, None)
            if delta > 0 or (delta == 0 and self._idle):
                self._event()

    def delivered(self, batch: Batch) -> None:
        """A batch counted in flight came back from the pool."""
        if batch.counted:
            with self._cond:
                self._in_flight -= 1
                # room for a batch, or nothing in flight (a partial batch may go now); a
                # task reading this one's results is told by the task itself (listeners)
                if self._waiting_room or self._in_flight == 0 or self._starving:
                    self._event()

    # -- buffer slots and pacing -----------------------------------------------------------

    def limit(self) -> int:
        """The buffer in force now, in items: ``buffer_size``, or fewer for a default
        buffer once the items' size is measured (at most ~``byte_budget`` bytes)."""
        budget = self.byte_budget
        if budget is not None:
            widest = max((t.item_bytes or 0.0 for t in self._accounted), default=0.0)
            if widest:
                return max(1, min(self.buffer_size, int(budget / widest)))
        return self.buffer_size

    def _free(self) -> int:
        return self.limit() - self._held + sum(t.released() for t in self._accounted)

    def _acquire(self, wanted: int, feed: Feed, partial: bool = False) -> int:
        """Take free buffer slots for ``feed``: how many (0: none now, the turn ends).

        A full batch's worth when there is room; fewer when ``partial``, when a reader
        starves, or when nothing is in flight (no delivery will come: after waiting up to
        FULLER_BATCH_WAIT for slots, if no other task could be fed meanwhile); one beyond
        the buffer when the feeder stalled and a reader waits for an item only it can
        submit (overdraft). A task never goes past its share (module docstring). When no
        other task could be fed, wait here for slots instead of ending the turn (one busy
        task: no round trip through the weave per batch)."""
        fuller_until: float | None = None
        with self._cond:
            while True:
                free = self._free()
                share = max(self.stride,
                            self.buffer_size - self.stride * max(0, self._feeding - 1))
                room = min(free, share - feed.holding())
                granted = 0
                if room >= wanted:
                    granted = wanted
                elif room >= 1 and (partial or self._starving):
                    granted = room
                elif room >= 1 and self._in_flight == 0:
                    if fuller_until is None and self._alone(feed):
                        fuller_until = time.monotonic() + FULLER_BATCH_WAIT
                    if fuller_until is None or time.monotonic() >= fuller_until:
                        granted = room
                elif self._overdraft_for(feed, free, share):
                    granted = 1
                    self._warn_overdraft()
                if granted:
                    self._held += granted
                    return granted
                missing = wanted - max(0, room)
                if fuller_until is None and not (self._alone(feed) and self._in_flight
                                                 and not self._starving):
                    self._missing = (missing if self._missing is None
                                     else min(self._missing, missing))
                    return 0
                self._wait_for_slots(missing, free, fuller_until)

    def _alone(self, feed: Feed) -> bool:
        """Under _cond: is ``feed`` the only task that could be fed now (no other one may
        have items, nothing was added or removed, not stopping)?"""
        if self.stopping or feed.task.removed or self._added or self._removed:
            return False
        return not any(f is not feed and f.ready and not f.ended and not f.task.removed
                       for f in self._feeds)

    def _wait_for_slots(self, missing: int, free: int, until: float | None) -> None:
        """Under _cond: wait until a task gave back its share of ``missing`` slots, any
        other event (a delivery, a source's wake, stop), or ``until`` (monotonic)."""
        tasks = self._accounted
        share = max(1, -(-missing // max(1, len(tasks))))
        for task in tasks:
            task.wake_at = task.released() + share
        seen = self._events
        self._idle = True
        if self._free() == free:
            while self._events == seen and not self.stopping:
                timeout = None if until is None else until - time.monotonic()
                if timeout is not None and timeout <= 0:
                    break
                self._cond.wait(timeout)
        self._idle = False
        for task in tasks:
            task.wake_at = math.inf

    def _may_overdraw(self) -> bool:
        with self._cond:
            return (self._starving > 0 and self._in_flight == 0
                    and any(task.starving() for task in self._starving_on))

    def _overdraft_for(self, feed: Feed, free: int, share: int) -> bool:
        """Under _cond: go one item over the buffer for ``feed``? Only after a round fed
        nothing, with nothing in flight, while a reader waits for an item not fed yet (a
        reader woken but not yet running still counts as starving: checked again here);
        first only for the task that reader waits for, a round later also for a task
        upstream of it (a chain that needs its upstream fed) still under its share."""
        if not (self._stalled and free <= 0 and self._starving and self._in_flight == 0):
            return False
        if any(f.ready and f.dealer is not None and not f.ended for f in self._feeds):
            return False         # a chained task may move results on: its turn first
        starving = [task for task in self._starving_on if task.starving()]
        if not starving:
            return False
        if feed.task in starving:
            return True
        return self._stalled >= 2 and feed.holding() < share and any(
            feed.task in _upstreams(task) for task in starving)

    def _give_back(self, count: int) -> None:
        if count:
            with self._cond:
                self._held -= count

    def _room_limit(self, task: Task) -> int:
        """At most 2 batches per worker in flight while the batch size still adapts (so the
        first results shape it instead of a queue of tiny batches); 8 per worker once a
        task's batches are as long as its stride allows."""
        return self.max_in_flight * (4 if task.batch_size >= self.batch_cap else 1)

    def _wait_for_room(self, task: Task) -> bool:
        """Pace the feeder (see _room_limit). False: stopping or the task was removed."""
        limit = self._room_limit(task)
        with self._cond:
            while self._in_flight >= limit and not self.stopping and not task.removed:
                self._waiting_room = True
                self._cond.wait()
            self._waiting_room = False
            return not self.stopping and not task.removed

    def _warn_overdraft(self) -> None:
        if self._overdrawn:
            return
        self._overdrawn = True
        message = (f"{self.name}: the buffer ({self.buffer_size} items) is full of results "
                   f"that are not being read while a reader waits for another task; going "
                   f"over the buffer to avoid a deadlock. Read the tasks in step "
                   f"(docs/imap.md, rules) or give a larger buffer.")
        log.warning("%s", message)
        try:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        except Warning:  # warnings turned into errors: logged already; the feeder goes on
            pass



def _upstreams(task: Task) -> list[Task]:
    """The tasks whose results ``task`` reads, directly or through other chained tasks."""
    found: list[Task] = []
    upstream = task.upstream
    while upstream is not None and upstream not in found:
        found.append(upstream)
        upstream = upstream.upstream
    return found
