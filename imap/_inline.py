"""The inline pool: ``IMap(worker_type='inline')`` has no workers, no feeder thread and no
reader threads. Each result is evaluated by the thread that asks for it, in input order.

    reader thread: next() / iteration / take_ready() of task T   (whoever reads T)
        --> Task.take / Task.take_runs find nothing arrived
        --> InlineFeeder.fill(T, count, timeout), in the reader's thread:
              T's input --take(n)--> items       (a BatchSource, or an IterableSource that
                                                  reads in this thread: imap._sources)
              T's upstream task --take_runs(n)--> items   (a chain: evaluated there first)
              --> evaluated here, errors in place --> Task.deliver --> the reader takes them
    a source's wake / an upstream's listener --> InlineFeeder._poke: a fill waiting for
        input looks again, and T's own wakes (its notify callback, readers of T) are called

Who evaluates: the reader of the task. ``next()`` and iteration evaluate one item per
result asked for, like the builtin ``map``; ``take_ready(count)`` evaluates up to ``count``
items (``None``: up to a stride) of what the input has ready, never waiting for the input.
papy reads a Piper's task with take_ready from its run's scheduler thread, so on an inline
IMap the scheduler thread evaluates the Workers; a task whose results another IMap's task
reads is evaluated by that IMap's feeder thread.

What an inline pool does not have: a weave (a task is evaluated when it is read; tasks
given one iterator or one upstream task take its items as they read them, not in turns of
``stride``), read-ahead (nothing is read before it is asked for, so the buffer never fills
and never overdraws), and workers to lose (no WorkerDiedError; nothing is pickled, so no
SerializationError). Errors raised by the function, by ``call_batch`` or by the input are
in place as on every pool, with the traceback as ``__cause__`` (a RemoteTraceback).

Timeouts. ``next(timeout=...)`` bounds the wait for the *input* (a BatchSource with nothing
ready, an upstream task of another pool); the evaluation itself is not interrupted.
``item_timeout``: in the main thread (where ``signal.setitimer`` exists) an item that runs
longer is interrupted by SIGALRM, fails with TimeoutError in its place, and the task goes on
(an outer timer, e.g. pytest-timeout's, is put back after each item; a function that
catches BaseException can swallow the interruption). In any other thread (papy's scheduler
thread) an item cannot be interrupted: it runs to its end, then fails with TimeoutError in
its place when it ran longer than its limit (its result is dropped).

Shutdown: nothing to join. stop() closes every task (a blocked reader gets RuntimeError),
closes the inputs the IMap made, and wakes a fill that waits for its input.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from ._errors import attach_traceback, decorate
from ._evaluate import evaluate, make_call
from ._feeder import Feeder
from ._task import Task
from .protocols import Wake

__all__ = ["InlineFeeder", "inline_workers"]

log = logging.getLogger(__name__)

#: the alarm's precision margin: an outer timer due within this of the item's limit is left
#: to ring instead (seconds)
_ALARM_MARGIN = 1e-3


def inline_workers(worker_remote: list[Any]) -> int:
    """The worker count of an inline IMap: one (the reader's thread); remote workers are
    refused (``worker_num`` is accepted and ignored)."""
    if worker_remote:
        raise ValueError("worker_type='inline' evaluates in the thread that reads the "
                         "results: it takes no worker_remote (use worker_type='process' "
                         "with worker_remote, or a separate IMap)")
    return 1


class _Readers:
    """The tasks reading one source (its wake wakes them all)."""

    __slots__ = ("source", "tasks")

    def __init__(self, source: Any) -> None:
        self.source = source
        self.tasks: list[Task] = []


class InlineFeeder(Feeder):
    """The Feeder of an inline IMap: its thread never starts; readers feed themselves
    through ``fill`` (set as ``Task.fill``). The buffer accounting of SlotAccounting is
    kept for ``buffer_used`` (items evaluated and not yet taken)."""

    def __init__(self, name: str, pool: Any, stride: int, buffer_size: int, batch_cap: int,
                 workers: int) -> None:
        super().__init__(name, pool, stride, buffer_size, batch_cap, workers)
        self._calls: dict[int, Callable[[Any], Any]] = {}   # task key -> its call
        self._readers: dict[int, _Readers] = {}             # id(source) -> its readers
        self._listening: dict[Task, tuple[Task, Wake]] = {}  # task -> (upstream, listener)

    # -- life cycle and tasks (IMap, any thread) ------------------------------------------

    def start(self) -> None:
        """Nothing to start: the readers evaluate."""

    def stop(self) -> None:
        with self._cond:
            self.stopping = True
            listening, self._listening = self._listening, {}
            self._cond.notify_all()
        for upstream, listener in listening.values():
            _unlisten(upstream, listener)

    def add(self, task: Task) -> None:
        """Called by the IMap under its lock. The task's input is told to wake us at once
        (a source's ``notify``, which only stores the wake; a listener on an upstream task),
        so that a reader that waits for the task's wake before it reads is woken."""
        with self._cond:
            self._accounted = self._accounted + (task,)
            task.fill = self.fill
            self._event()
        self._listen(task)

    def remove(self, task: Task) -> None:
        """The task was removed while running: its input is no longer read."""
        close = None
        with self._cond:
            if task not in self._accounted:
                return
            self._accounted = tuple(t for t in self._accounted if t is not task)
            self._held -= task.fed
            readers = self._readers.get(id(task.source))
            if readers is not None:
                readers.tasks.remove(task)
                if not readers.tasks:
                    del self._readers[id(task.source)]
                    close = task.source if task.own_source else None
            listening = self._listening.pop(task, None)
            self._event()
            self._cond.notify_all()
        if listening is not None:
            _unlisten(*listening)
        if close is not None:
            close.close()

    # -- evaluation in the reader's thread --------------------------------------------------

    def fill(self, task: Task, count: int | None, timeout: float | None) -> float | None:
        """Evaluate up to ``count`` (None: a stride) ready items of ``task``'s input and
        deliver them to the task; when none is ready, wait up to ``timeout`` seconds (None:
        no limit, 0: never) for the input. Returns what is left of ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = self.stride if count is None else max(1, count)
        while True:
            with self._cond:
                if self._over(task):
                    return _left(deadline)
                seen = self._events
            if self._feed(task, wanted):
                return _left(deadline)
            left = _left(deadline)
            if left is not None and left <= 0:
                return 0.0
            self.on_starving(1, task)      # a reader waits for an item not read yet
            try:
                with self._cond:
                    while self._events == seen and not self._over(task):
                        left = _left(deadline)
                        if left is not None and left <= 0:
                            return 0.0
                        self._cond.wait(left)
            finally:
                self.on_starving(-1, task)

    def _over(self, task: Task) -> bool:
        """Under _cond: nothing more to evaluate for ``task`` now or ever."""
        return (self.stopping or task.removed or task.closed is not None
                or task.total is not None)

    def _feed(self, task: Task, wanted: int) -> bool:
        """Evaluate what the input has ready (at most ``wanted``); True when something was
        delivered or the input ended, False when it had nothing ready."""
        upstream = task.upstream
        if upstream is not None:
            runs = upstream.take_runs(wanted)
            if runs is None:
                task.end_input()
                return True
            if not runs:
                return False
            upstream.wake_feeder_if_due()
            for _, values, errors in runs:
                self._evaluate(task, values, errors)
            return True
        try:
            items = task.source.take(wanted)
        except BaseException as exc:  # noqa: BLE001 - the error of the next position
            self._deliver(task, [None], {0: exc})
            return True
        if items is None:
            task.end_input()
            return True
        if not items:
            return False
        self._evaluate(task, items, None)
        return True

    def _listen(self, task: Task) -> None:
        """Have the task's input wake us when it may have items: a listener on its upstream
        task, or the source's notify (once per source: tasks sharing it share the wake)."""
        upstream = task.upstream
        if upstream is not None:
            listener = self._waker((task,))
            with self._cond:
                self._listening[task] = (upstream, listener)
            upstream.listeners.append(listener)
            return
        with self._cond:
            readers = self._readers.get(id(task.source))
            if readers is not None:
                readers.tasks.append(task)
                return
            readers = self._readers[id(task.source)] = _Readers(task.source)
            readers.tasks.append(task)
        try:
            readers.source.notify(self._waker(readers.tasks))
        except BaseException as exc:  # noqa: BLE001 - that task's error; it ends
            error = RuntimeError(f"{self.name}: the input of task {task.id} refused its "
                                 f"wake (notify raised {exc!r})")
            error.__cause__ = exc
            self._deliver(task, [None], {0: error})
            task.end_input()

    def _waker(self, tasks: list[Task] | tuple[Task, ...]) -> Wake:
        def wake() -> None:            # the input may have items: results can be had now
            with self._cond:
                self._event()
                self._cond.notify_all()
            for task in tuple(tasks):
                task.signal()
        return wake

    def _evaluate(self, task: Task, items: list[Any],
                  inherited: dict[int, BaseException] | None) -> None:
        """Evaluate ``items`` here and deliver them; ``inherited``: positions whose item is
        an upstream error, delivered as that error without evaluating."""
        call = self._calls.get(task.spec.key)
        if call is None:
            spec = task.spec
            call = self._calls[spec.key] = make_call(spec.func, spec.args, spec.kwargs)
        if inherited:
            clean = [p for p in range(len(items)) if p not in inherited]
            values: list[Any] = [None] * len(items)
            errors: dict[int, BaseException] = dict(inherited)
            got, raised = self._run(task, call, [items[p] for p in clean], task.fed)
            for k, position in enumerate(clean):
                values[position] = got[k]
                if raised and k in raised:
                    errors[position] = raised[k]
            self._deliver(task, values, errors)
            return
        values, raised = self._run(task, call, items, task.fed)
        self._deliver(task, values, raised)

    def _run(self, task: Task, call: Callable[[Any], Any], items: list[Any], first: int
             ) -> tuple[list[Any], dict[int, BaseException] | None]:
        """Evaluate ``items`` (the first is item ``first`` of the task) in this thread."""
        if not items:
            return [], None
        limit = task.spec.item_timeout
        if limit is not None:
            values, errors = _evaluate_limited(call, items, limit, first, task.id)
        else:
            values, errors, _ = evaluate(call, items)
        if errors:
            _attach_tracebacks(errors)
            decorate(errors, items)
        return values, errors

    def _deliver(self, task: Task, values: list[Any],
                 errors: dict[int, BaseException] | None) -> None:
        start = task.fed
        task.fed += len(values)
        with self._cond:
            self._held += len(values)
        task.deliver(start, values, errors or None)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _unlisten(upstream: Task, listener: Wake) -> None:
    try:
        upstream.listeners.remove(listener)
    except ValueError:
        pass


def _attach_tracebacks(errors: dict[int, BaseException]) -> None:
    """As on the other pools: the traceback as text in ``__cause__`` (RemoteTraceback)."""
    for exc in errors.values():
        if exc.__traceback__ is not None:
            attach_traceback(exc, "".join(traceback.format_exception(exc)))


# -- item_timeout ----------------------------------------------------------------------------

class _Interrupted(BaseException):
    """Raised inside an item by the alarm; a BaseException, so that ``except Exception`` in
    the function does not swallow it."""


def _evaluate_limited(call: Callable[[Any], Any], items: list[Any], limit: float,
                      first: int, task_id: int
                      ) -> tuple[list[Any], dict[int, BaseException] | None]:
    """Evaluate item by item, each within ``limit`` seconds (see the module docstring)."""
    values: list[Any] = []
    errors: dict[int, BaseException] | None = None
    alarm = _alarm_possible()
    for position, item in enumerate(items):
        index = first + position
        started = time.monotonic()
        error: BaseException | None = None
        value = None
        try:
            value = _call_with_alarm(call, item, limit) if alarm else call(item)
        except _Interrupted:
            error = TimeoutError(f"item {index} of task {task_id} ran longer than its "
                                 f"item_timeout of {limit} s; it was interrupted (an inline "
                                 f"pool, in the main thread)")
        except BaseException as exc:  # noqa: BLE001 - every exception is an item's result
            error = exc
        else:
            elapsed = time.monotonic() - started
            if elapsed > limit:
                error = TimeoutError(
                    f"item {index} of task {task_id} ran {elapsed:.3g} s, longer than its "
                    f"item_timeout of {limit} s; an inline pool cannot interrupt an item "
                    f"outside the main thread, so it ran to its end and its result is dropped")
        if error is not None:
            errors = errors if errors is not None else {}
            errors[position] = error
            value = None
        values.append(value)
    return values, errors


def _alarm_possible() -> bool:
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGALRM) is not None)


def _call_with_alarm(call: Callable[[Any], Any], item: Any, limit: float) -> Any:
    """``call(item)``, interrupted with _Interrupted after ``limit`` seconds (main thread).
    A timer already running (pytest-timeout's) is suspended and put back afterwards; when
    it is due first, it is left to ring instead."""
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    if outer_delay and outer_delay <= limit + _ALARM_MARGIN:
        return call(item)
    previous = signal.getsignal(signal.SIGALRM)
    armed = False

    def ring(signum: int, frame: FrameType | None) -> None:
        if armed:
            raise _Interrupted

    started = time.monotonic()
    signal.signal(signal.SIGALRM, ring)
    try:
        try:
            armed = True
            signal.setitimer(signal.ITIMER_REAL, limit)
            return call(item)
        finally:
            armed = False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay:
            spent = time.monotonic() - started
            signal.setitimer(signal.ITIMER_REAL, max(outer_delay - spent, _ALARM_MARGIN),
                             outer_interval)
