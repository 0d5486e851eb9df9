"""The feeder: reads the tasks' inputs in the weave's order and submits batches.

    task inputs --(weave: stride items of a task, round robin)--> Feeder thread
        --Batch--> Pool.submit                     (buffer slots taken before or after reading)
    readers --released slots / "I starve"--> Feeder (wake-ups on self._slots)
    Pool --delivered(batch)--> Feeder              (a batch is no longer in flight)

One Feeder per run of an IMap (start() to stop()). It owns the buffer accounting, guarded
by ``self._slots`` (a Condition): ``held`` slots taken by the feeder, the ``released()``
counts of every task (written by the readers), the readers that starve, and the batches in
flight. It waits on that Condition for three things, each with the wake-up that ends it:

    free slots for a batch     a reader gave back its share (Task.wake_at), a reader is
                               about to block, or a batch was delivered while one starves
    room for another batch     a batch was delivered (at most 2 per worker in flight while
                               batch sizes adapt, 8 once they reached their cap)
    stop                       stop() notifies

Shutdown: stop() sets ``stopping`` and notifies; the thread returns at its next check. A
feeder blocked inside a user's input iterator cannot be woken: the IMap abandons it (it is a
daemon thread, and it drops whatever it reads afterwards).
"""
from __future__ import annotations

import itertools
import logging
import math
import threading
import time

from ._task import Task
from .backends.base import Batch

log = logging.getLogger("imap")
#: an input that may wait for data: items read are sent after at most this long
MAX_BATCH_DELAY = 0.005
_local = threading.local()


class Feeder:
    """Feeds the tasks of one run of an IMap to its pool (see the module docstring)."""

    def __init__(self, name: str, tasks: tuple, pool, stride: int, buffer_size: int,
                 batch_cap: int, workers: int):
        self.name = name
        self.tasks = tasks
        self.pool = pool
        self.stride = stride
        self.buffer_size = buffer_size
        self.batch_cap = batch_cap
        self.max_in_flight = 2 * workers
        self.ident: int | None = None
        self.stopping = False
        self._slots = threading.Condition(threading.Lock())
        self._held = 0
        self._starving = 0
        self._in_flight = 0
        self._waiting_slots = False
        self._waiting_room = False
        self._overdrawn = False
        self._thread_started = False
        self.thread = threading.Thread(target=self._feed_tasks, daemon=True,
                                       name=f"{name}-feeder")

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the feeder thread (once; later calls do nothing)."""
        with self._slots:
            if self._thread_started:
                return
            self._thread_started = True
        self.thread.start()

    def stop(self) -> None:
        with self._slots:
            self.stopping = True
            self._slots.notify_all()

    def used(self) -> int:
        """Buffer slots in use: items read and not yet taken (a lock-free snapshot)."""
        return max(0, self._held - sum(t.released() for t in self.tasks))

    # -- called by readers and by the pool -------------------------------------------------

    def wake(self) -> None:
        """A reader gave back the slots the feeder waits for."""
        with self._slots:
            self._slots.notify_all()
        # hand the GIL over now: a consumer busy in a tight loop would otherwise keep it for
        # the whole switch interval (5 ms) and drain the pipeline before the feeder refills it
        time.sleep(0)

    def on_starving(self, delta: int) -> None:
        """A reader is about to block (delta 1: starving, 0: not) or woke up (-1)."""
        with self._slots:
            self._starving += delta
            if delta > 0 or (delta == 0 and self._waiting_slots):
                self._slots.notify_all()

    def delivered(self, batch: Batch) -> None:
        """A batch counted in flight came back from the pool."""
        if batch.counted:
            with self._slots:
                self._in_flight -= 1
                if self._waiting_room or (self._waiting_slots and self._starving):
                    self._slots.notify_all()

    def feed_now(self, task: Task) -> bool:
        """The feeder itself waits for a result of ``task`` that was never submitted (the
        task's results are read by more tasks, or faster, than the weave feeds it): feed one
        more stride of it now, out of turn, instead of waiting forever. False when the task
        has nothing more to feed."""
        if task.total is not None:
            return False
        return self._feed_stride(task) is not None and (
            task.fed > task.done_before + task.position() or task.total is not None)

    # -- the weave -------------------------------------------------------------------------

    def _feed_tasks(self) -> None:
        self.ident = threading.get_ident()
        active = list(self.tasks)
        try:
            while active:
                for task in list(active):
                    outcome = self._feed_stride(task)
                    if outcome is None:
                        return
                    if not outcome:
                        active.remove(task)
        except BaseException as exc:  # noqa: BLE001 - reported in place, never lost
            if not self.stopping:
                log.exception("%s: the feeder failed", self.name)
                for task in active:
                    self._end_task_with_error(task, exc)

    def _feed_stride(self, task: Task):
        """Feed up to ``stride`` items of one task. True: more to come, False: the task's
        input ended, None: stopping."""
        remaining = self.stride
        while remaining > 0:
            if not self._wait_for_room(task):
                return None
            wanted = min(task.next_batch_size(self.batch_cap), remaining)
            if task.chained:
                # its input reads our own results: read first (that gives slots back)
                items, failure, ended = _pull(task.iterator, wanted)
                if not self._submit_pulled(task, items):
                    return None
                taken = len(items)
            else:
                granted = self._acquire(wanted)
                if granted == 0:
                    return None
                if task.steady:
                    items, failure, ended = _pull(task.iterator, granted)
                    if items:
                        self._submit(task, items)
                    taken = len(items)
                else:   # submits the items as it reads them
                    taken, failure, ended = self._pull_ready(task, granted)
                unused = granted - taken - (failure is not None)
                if unused:
                    self._give_back(unused)
            if failure is not None:
                if task.chained and not self._acquire_exact(1):
                    return None
                self._fail_item(task, failure)
            remaining -= taken + (failure is not None)
            if ended:
                with task.cond:
                    task.total = task.fed
                    task.cond.notify_all()
                return False
            if self.stopping:
                return None
        return True

    def _pull_ready(self, task: Task, count: int):
        """An input that may wait: if its class has ``__imap_read__(count)`` (the results
        of another IMap: ``_ResultStream``, or a stream that reads one), submit the items it
        has ready (it waits for the first only; [] at its end; None: read it item by item
        this time); otherwise ``_pull_unsteady``. Returns like ``_pull_unsteady``."""
        read = getattr(type(task.iterator), "__imap_read__", None)
        if read is not None:
            try:
                items = read(task.iterator, count)
            except BaseException as exc:  # noqa: BLE001 - an error in that item's place
                return 0, exc, False
            if items is not None:
                if items:
                    self._submit(task, items)
                return len(items), None, not items
        return self._pull_unsteady(task, count)

    def _pull_unsteady(self, task: Task, count: int):
        """Read up to ``count`` items from an input that may wait for data (a generator, a
        file, a socket), never holding items back for long: items read are sent at once
        when the input calls imap.waiting_for_input() (it is about to wait), and when the
        batch has been open for more than MAX_BATCH_DELAY. Returns like _pull, but with the
        number of items read (all of them already submitted) in the place of the items."""
        items: list = []
        sent = 0
        opened = None
        clock = time.monotonic

        def flush():
            nonlocal items, sent
            if items:
                self._submit(task, items)
                sent += len(items)
                items = []
        _local.flush = flush
        try:
            for item in task.iterator:
                items.append(item)
                held = len(items)
                if held + sent >= count:
                    break
                # the clock is read for each of a batch's first 8 items (a slow input is
                # flushed at once), then every 8th (a fast one pays little for it)
                if held > 8 and held & 7:
                    continue
                now = clock()
                if opened is None:
                    opened = now
                elif now - opened > MAX_BATCH_DELAY:
                    flush()
                    opened = None
            else:
                flush()
                return sent, None, True
        except BaseException as exc:  # noqa: BLE001 - an error in that item's place
            flush()
            return sent, exc, False
        finally:
            _local.flush = None
        flush()
        return sent, None, False

    def _submit_pulled(self, task: Task, items: list) -> bool:
        """Chained input: the items are pulled already; take slots for them, maybe in parts."""
        while items:
            granted = self._acquire(len(items))
            if granted == 0:
                return False
            self._submit(task, items[:granted])
            items = items[granted:]
        return True

    def _submit(self, task: Task, items: list) -> None:
        start = task.fed
        task.fed += len(items)
        with self._slots:
            self._in_flight += 1
        self.pool.submit(Batch(task.spec, start, items, tracked=task.tracked_mode(len(items)),
                               counted=True))

    def _fail_item(self, task: Task, exc: BaseException) -> None:
        """The input iterator raised: that position holds the exception."""
        index = task.fed
        task.fed += 1
        task.deliver(index, [None], {0: exc})

    def _end_task_with_error(self, task: Task, exc: BaseException) -> None:
        error = RuntimeError(f"{self.name}: feeding task {task.id} failed: {exc!r}")
        error.__cause__ = exc
        self._fail_item(task, error)
        with task.cond:
            task.total = task.fed
            task.cond.notify_all()

    # -- buffer slots and pacing -------------------------------------------------------------

    def _acquire(self, wanted: int) -> int:
        """Wait for free buffer slots; return how many were granted (0: stopping)."""
        tasks = self.tasks
        with self._slots:
            while True:
                if self.stopping:
                    return 0
                free = self.buffer_size - self._held + sum(t.released() for t in tasks)
                if free >= wanted:
                    granted = wanted
                    break
                if free >= 1 and self._starving > 0:
                    granted = free      # a reader waits for an item not submitted yet
                    break
                if self._starving > 0 and self._in_flight == 0:
                    # every slot holds a result nobody reads while a reader waits for an item
                    # only we can submit: overdraw the buffer by one item instead of hanging
                    granted = 1
                    self._warn_overdraft()
                    break
                # wake up when one task alone gave back its share of what is missing
                share = max(1, -(-(wanted - max(free, 0)) // len(tasks)))
                for t in tasks:
                    t.wake_at = t.released() + share
                self._waiting_slots = True
                if self.buffer_size - self._held + sum(t.released() for t in tasks) == free:
                    self._slots.wait()
                self._waiting_slots = False
                for t in tasks:
                    t.wake_at = math.inf
            self._held += granted
            return granted

    def _acquire_exact(self, count: int) -> bool:
        while count:
            granted = self._acquire(count)
            if granted == 0:
                return False
            count -= granted
        return True

    def _give_back(self, count: int) -> None:
        with self._slots:
            self._held -= count

    def _wait_for_room(self, task: Task) -> bool:
        """Pace the feeder: at most 2 batches per worker in flight while the batch size
        still adapts (so the first results shape it instead of a queue of tiny batches);
        8 per worker once a task's batches are as long as its stride allows (fast items,
        where only more batches in flight keep the workers busy). False: stopping."""
        limit = self.max_in_flight * (4 if task.batch_size >= self.batch_cap else 1)
        with self._slots:
            while self._in_flight >= limit and not self.stopping:
                self._waiting_room = True
                self._slots.wait()
            self._waiting_room = False
            return not self.stopping

    def _warn_overdraft(self) -> None:
        if not self._overdrawn:
            self._overdrawn = True
            log.warning("%s: the buffer (%d items) is full of results that are not being read "
                        "while a reader waits for another task; going over the buffer to avoid "
                        "a deadlock. Read the tasks in step (docs/imap.md, rules) or give a "
                        "larger buffer.", self.name, self.buffer_size)


def waiting_for_input() -> None:
    """Call from an input iterator right before it waits for new data (``tail -f``, a
    socket, a queue): the items it gave the feeder so far go to the workers now instead of
    waiting for the rest of their batch. Does nothing outside an IMap's feeder thread.

    Example::

        def follow(path):
            with open(path) as handle:
                while True:
                    line = handle.readline()
                    if line:
                        yield line
                    else:
                        imap.waiting_for_input()
                        time.sleep(0.1)
    """
    flush = getattr(_local, "flush", None)
    if flush is not None:
        flush()


def _pull(iterator, count: int):
    """Read up to ``count`` items: (items, exception raised by the input or None, ended).

    An iterator whose class has ``__imap_take__(count)`` is asked for the list of its next
    ``count`` items at once; a shorter list means it ended (it never waits for data)."""
    items: list = []
    take = getattr(type(iterator), "__imap_take__", None)
    try:
        if take is not None:
            items = take(iterator, count)
            return items, None, len(items) < count
        items.extend(itertools.islice(iterator, count))
    except BaseException as exc:  # noqa: BLE001 - becomes an error in that item's place
        return items, exc, False
    return items, None, len(items) < count
