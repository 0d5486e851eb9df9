"""The feeder: reads the tasks' inputs in the weave's order and submits batches, and never
waits for an input.

    BatchSource.take(count) ------------------+
    upstream task: take_runs (a chain) -------+--> Feeder thread --Batch--> Pool.submit
    sources, upstream deliveries, add_task,   |
      remove(), stop() --wake / poke--------> self._cond (an event: _events += 1)
    readers --slots given back, "I starve"--> self._cond
    Pool --delivered(batch)-----------------> self._cond  (a batch is no longer in flight)

One Feeder per run of an IMap (start() to stop()). It owns the buffer accounting, guarded by
``self._cond``: ``_held`` slots taken by the feeder (items fed, slots reserved for a reader
thread's read-ahead, upstream results dealt to a chained task), the ``released()`` counts of
the tasks (written by their readers), the readers that starve and the batches in flight.

The weave: rounds over the tasks in the order they were added. A task's turn feeds up to
``stride`` items (k strides when k chained tasks read it) in batches whose size adapts
(``Task.learn``); it ends early when the input has nothing ready (the task is skipped until
its source wakes it), when the input ended, or when there are no free slots for it. A task
holds at most its share of the buffer: the buffer less one stride per other task still
reading its input. Only when a whole round fed nothing does the feeder wait on ``_cond``,
for any event. A chained task's items move from its upstream keeping their buffer slots, so
a chain never needs free slots.

Overdraft: when every slot holds a result that nobody reads while a reader waits for an
item only the feeder can submit (rule 5 of docs/imap.md broken), the feeder goes over the
buffer one item at a time, preferring the task that reader waits for, with a warning.

Shutdown: stop() sets ``stopping`` and notifies; the thread returns at its next check. The
feeder calls no user code but ``BatchSource.take``/``notify``.
"""
from __future__ import annotations

import logging
import math
import threading
from typing import Any

from ._errors import decorate
from ._feeds import Dealer, Feed
from ._slots import SlotAccounting
from ._task import Task
from .backends.base import Batch

log = logging.getLogger(__name__)


class Feeder(SlotAccounting):
    """Feeds the tasks of one run of an IMap to its pool (see the module docstring)."""

    def __init__(self, name: str, pool: Any, stride: int, buffer_size: int, batch_cap: int,
                 workers: int) -> None:
        super().__init__(name, stride, buffer_size, workers)
        self.pool = pool
        self.batch_cap = batch_cap
        self._thread_started = False
        self._dealers: dict[int, Dealer] = {}        # id(upstream Task) -> its dealer
        self._source_feeds: dict[int, list[Feed]] = {}   # id(source) -> tasks reading it
        self.thread = threading.Thread(target=self._feed_tasks, daemon=True,
                                       name=f"{name}-feeder")

    # -- life cycle and tasks (any thread) -------------------------------------------------

    def start(self) -> None:
        """Start the feeder thread (once; later calls do nothing)."""
        with self._cond:
            if self._thread_started:
                return
            self._thread_started = True
        self.thread.start()

    def stop(self) -> None:
        with self._cond:
            self.stopping = True
            self._cond.notify_all()

    def add(self, task: Task) -> None:
        with self._cond:
            self._added.append(task)
            self._event()

    def remove(self, task: Task) -> None:
        with self._cond:
            self._removed.append(task)
            self._event()

    # -- the weave -------------------------------------------------------------------------

    def _feed_tasks(self) -> None:
        try:
            while True:
                with self._cond:
                    if self.stopping:
                        return
                    seen = self._events
                    released = sum(t.released() for t in self._accounted)
                    added, self._added = self._added, []
                    removed, self._removed = self._removed, []
                self._apply(added, removed)
                progressed = self._round()
                if progressed is None:
                    return
                if progressed:
                    self._stalled = 0
                    continue
                self._stalled += 1
                if self._stalled <= 2 and self._may_overdraw():
                    continue             # one more round, allowed to go over the buffer
                self._wait_idle(seen, released)
        except BaseException as exc:  # reported in place, never lost
            if not self.stopping:
                log.exception("%s: the feeder failed", self.name)
                for feed in self._feeds:
                    if not feed.ended:
                        self._end_with_error(feed, exc)

    def _round(self) -> bool | None:
        """One turn for every task that may have items. True: some were fed; None: stop."""
        self._missing = None
        progressed = False
        for feed in list(self._feeds):
            if not feed.ready or feed.ended or feed.task.removed:
                continue
            outcome = self._turn(feed)
            if outcome is None:
                return None
            progressed = progressed or outcome
        return progressed

    def _wait_idle(self, seen: int, released: int) -> None:
        """Nothing could be fed: wait for any event (and for slots given back, when a
        turn lacked some: each task wakes us once it gave back its share of them)."""
        with self._cond:
            tasks = self._accounted
            if self._missing is not None:
                # with nothing in flight a single slot is worth a look (partial batches)
                share = 1 if self._in_flight == 0 else max(
                    1, -(-self._missing // max(1, len(tasks))))
                for task in tasks:
                    task.wake_at = task.released() + share
            if sum(t.released() for t in tasks) != released:
                self._events += 1        # given back while the round ran: look again
            self._idle = True
            while self._events == seen and not self.stopping:
                self._cond.wait()
            self._idle = False
            for task in tasks:
                task.wake_at = math.inf

    def _turn(self, feed: Feed) -> bool | None:
        """Feed up to ``stride`` items of one task (k strides when k chained tasks read
        it). True: fed some, False: nothing could be fed, None: stopping."""
        done = 0
        task = feed.task
        readers = self._dealers.get(id(task))
        quota = self.stride * (len(readers.readers) if readers is not None else 1)
        while done < quota and feed.ready and not feed.ended and not task.removed:
            if not self._wait_for_room(task):
                return None if self.stopping else done > 0
            wanted = min(task.next_batch_size(self.batch_cap), quota - done)
            moved = (self._feed_dealt(feed, wanted) if feed.dealer is not None
                     else self._feed_source(feed, wanted, quota - done))
            if not moved:
                break                    # nothing ready, the end, or no slots for it
            done += moved
        return done > 0

    def _feed_source(self, feed: Feed, wanted: int, turn_left: int) -> int:
        """Items from a BatchSource: how many were used. An input read by our own reader
        thread keeps up to the rest of its turn reserved, so the reader reads ahead while
        the weave moves on; what it has is sent in batches of ``wanted``."""
        task = feed.task
        if feed.reserving:
            need = turn_left - feed.reserved
            if need > 0:
                feed.reserved += self._acquire(need, feed, partial=True)
            count = feed.reserved
        else:
            count = self._acquire(wanted, feed)
        if count == 0:
            return 0
        try:
            items = task.source.take(count)
        except BaseException as exc:  # noqa: BLE001 - the error of the next position
            self._slots_used(feed, count, 1)
            self._fail_item(task, exc)
            return 1
        if items is None:
            self._slots_used(feed, count, 0)
            self._end_feed(feed)
            return 0
        if len(items) > count:      # more than asked: hold them anyway
            with self._cond:
                self._held += len(items) - count
            count = len(items)
        self._slots_used(feed, count, len(items))
        if not items:
            feed.ready = False       # the source wakes us when it has more
            return 0
        for start in range(0, len(items), wanted):
            self._submit(task, items if len(items) <= wanted else items[start:start + wanted])
        return len(items)

    def _slots_used(self, feed: Feed, granted: int, used: int) -> None:
        """``used`` of the ``granted`` slots hold items now; a reserving feed keeps the
        rest for its reader's read-ahead, any other gives them back."""
        if feed.reserving:
            feed.reserved -= used
        elif granted > used:
            self._give_back(granted - used)

    def _feed_dealt(self, feed: Feed, wanted: int) -> int:
        """Items dealt to this task (an upstream task's results, or a source it shares):
        how many were submitted."""
        dealer = feed.dealer
        assert dealer is not None
        if not feed.pending and not dealer.ended:
            if dealer.same_imap:
                dealt = dealer.pull(None)           # released by the upstream ...
                with self._cond:
                    self._held += dealt             # ... and held again: the same slots
            else:
                granted = self._acquire(wanted, feed)
                if granted == 0:
                    return 0
                dealt = dealer.pull(granted)
                self._give_back(granted - dealt)
            if dealt or dealer.ended:
                with self._cond:
                    self._events += 1   # other readers may have results (or the end) now
        if not feed.pending:
            if dealer.ended:
                self._end_feed(feed)
            else:
                feed.ready = False
            return 0
        return self._submit_pending(feed, wanted)

    def _submit_pending(self, feed: Feed, wanted: int) -> int:
        """Submit up to ``wanted`` dealt results (their slots are held already)."""
        moved = 0
        task = feed.task
        while feed.pending and moved < wanted:
            chunk = feed.pending[0]
            values, errors, offset = chunk
            count = min(wanted - moved, len(values) - offset)
            if errors is None:
                self._submit(task, values if count == len(values)
                             else values[offset:offset + count])
            else:
                start = offset
                for position in range(offset, offset + count):
                    if position in errors:
                        if position > start:
                            self._submit(task, values[start:position])
                        self._fail_item(task, errors[position])
                        start = position + 1
                if start < offset + count:
                    self._submit(task, values[start:offset + count])
            moved += count
            chunk[2] = offset + count
            if chunk[2] == len(values):
                feed.pending.popleft()
        return moved

    # -- tasks joining and leaving ----------------------------------------------------------

    def _apply(self, added: list[Task], removed: list[Task]) -> None:
        for task in added:
            if not task.removed:
                self._join(task)
        for task in removed:
            self._leave(task)

    def _join(self, task: Task) -> None:
        upstream, source = task.upstream, task.source
        dealer = None
        if upstream is not None:
            dealer = self._dealers.get(id(upstream))
            if dealer is None:
                same = upstream.release_wake == self.wake
                dealer = Dealer(self.stride, upstream=upstream, same_imap=same)
                self._dealers[id(upstream)] = dealer
                upstream.listeners.append(self._dealer_wake(dealer))
        elif id(source) in self._source_feeds:
            dealer = self._share(source)      # several tasks read one source: deal it
        feed = Feed(task, dealer, task.own_source and not getattr(source, "steady", True)
                    and dealer is None)
        if dealer is not None:
            dealer.readers.append(feed)
        self._feeds.append(feed)
        self._feed_of[task] = feed
        self._feeding += 1
        with self._cond:
            self._accounted = self._accounted + (task,)
        if source is not None:
            sharing = self._source_feeds.setdefault(id(source), [])
            sharing.append(feed)
            if len(sharing) == 1:
                try:
                    source.notify(self._source_wake(sharing))
                except BaseException as exc:  # noqa: BLE001 - that task's error; it ends
                    self._end_with_error(feed, exc)

    def _share(self, source: Any) -> Dealer:
        """The dealer of a source a second task reads (made, and given the first task's
        feed, on the first such task)."""
        first = self._source_feeds[id(source)][0]
        if first.dealer is not None:
            return first.dealer
        dealer = Dealer(self.stride, source=source)
        dealer.readers.append(first)
        first.dealer = dealer
        if first.reserving:
            first.reserving = False
            self._give_back(first.reserved)
            first.reserved = 0
        return dealer

    def _leave(self, task: Task) -> None:
        feed = self._feed_of.pop(task, None)
        if feed is None:
            return
        self._feeds.remove(feed)
        if not feed.ended:
            self._feeding -= 1
        # everything it holds: what was fed (its released() leaves the sum with it), what is
        # reserved for its reader, what was dealt to it and not fed yet
        outstanding = task.fed + feed.reserved + feed.pending_count()
        feed.reserved = 0
        feed.pending.clear()
        with self._cond:
            self._held -= outstanding
            self._accounted = tuple(t for t in self._accounted if t is not task)
            self._events += 1
        if task.source is not None:
            sharing = self._source_feeds[id(task.source)]
            sharing.remove(feed)
            if not sharing:
                del self._source_feeds[id(task.source)]
                if task.own_source:
                    task.source.close()
        dealer = feed.dealer
        if dealer is not None:
            dealer.remove_reader(feed)
            if not dealer.readers and dealer.upstream is not None:
                del self._dealers[id(dealer.upstream)]
                dealer.upstream.listeners[:] = [
                    w for w in dealer.upstream.listeners
                    if getattr(w, "dealer", None) is not dealer]

    def _source_wake(self, feeds: list[Feed]) -> Any:
        def wake() -> None:            # one per source: every task reading it may go on
            for feed in feeds:
                feed.ready = True
            self.poke()
        return wake

    def _dealer_wake(self, dealer: Dealer) -> Any:
        def wake() -> None:
            dealer.wake()
            self.poke()
        wake.dealer = dealer  # type: ignore[attr-defined]  # a function's attribute
        return wake

    # -- items in, errors in place, the end ------------------------------------------------

    def _submit(self, task: Task, items: list[Any]) -> None:
        start = task.fed
        task.fed += len(items)
        with self._cond:
            self._in_flight += 1
        self.pool.submit(Batch(task.spec, start, items, tracked=task.tracked_mode(len(items)),
                               counted=True))

    def _fail_item(self, task: Task, exc: BaseException) -> None:
        """The input raised: that position holds the exception (and one buffer slot)."""
        index = task.fed
        task.fed += 1
        decorate({0: exc}, [])               # its .traceback (there is no .item)
        task.deliver(index, [None], {0: exc})

    def _end_feed(self, feed: Feed) -> None:
        if feed.ended:
            return
        feed.ended = True
        self._feeding -= 1
        if feed.reserved:
            self._give_back(feed.reserved)
            feed.reserved = 0
        feed.task.end_input()

    def _end_with_error(self, feed: Feed, exc: BaseException) -> None:
        error = RuntimeError(f"{self.name}: feeding task {feed.task.id} failed: {exc!r}")
        error.__cause__ = exc
        with self._cond:
            self._held += 1
        self._fail_item(feed.task, error)
        self._end_feed(feed)

def waiting_for_input() -> None:
    """Kept for compatibility; does nothing. Inputs that may wait are read by a reader
    thread that hands every item over at once, so an input no longer needs to say that it
    is about to wait."""
