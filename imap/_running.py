"""The running half of IMap: start, stop, the results the pool delivers (``RunLifecycle``,
a mixin of ``imap._imap.IMap``; its state and the tasks are IMap's).

Life cycle (``self._state``, changed only under ``self._lock``)::

    IDLE --start()--> STARTING --> STARTED --stop()--> STOPPING --> IDLE (tasks removed)

Shutdown order in stop():
 1. state STOPPING; the input readers the IMap made are closed; every task is closed
    (blocked readers get RuntimeError, notify callbacks are called); the feeder is told
 2. the pool stops: queued batches dropped, workers finish (or are killed if forced), joined
 3. the feeder and the input readers are joined (a reader stuck inside a user's iterator is
    abandoned after a grace, with a warning)
 4. tasks removed, state IDLE

An IMap left running at interpreter exit is stopped (``_stop_live_imaps``).
"""
from __future__ import annotations

import atexit
import enum
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Self

from ._errors import decorate, warn_safely
from ._feeder import Feeder
from ._inline import InlineFeeder
from ._pool import Pool
from .backends import _main_guard
from .backends.base import Batch, WorkerHandle

if TYPE_CHECKING:
    from ._task import Task

log = logging.getLogger(__name__)

#: the default buffer (2 x tasks x stride items) also holds at most about this many bytes
#: of items once their size is measured (process and remote pools): large items get fewer
#: buffer slots, small ones long batches
DEFAULT_BUFFER_BYTES = 256 << 20
#: seconds stop() waits for the feeder and for input readers blocked inside a user's input
FEEDER_GRACE = 2.0
_live: weakref.WeakSet[RunLifecycle] = weakref.WeakSet()


class _State(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"


class RunLifecycle:
    """Start, stop and deliveries of an IMap (see the module docstring)."""

    # IMap's settings and state (set by IMap.__init__)
    name: str
    worker_type: str
    stride: int
    buffer: int | None
    _worker_total: int
    _lock: threading.RLock
    _state: _State
    _stopped: threading.Event
    _not_starting: threading.Event
    _starter: int | None
    _pool: Pool | None
    _feeder: Feeder | None
    _tasks: list[Task]
    _by_id: dict[int, Task]
    _by_key: dict[int, Task]
    _next_id: int
    _next0: Callable[[], Any]
    _iterators: dict[int, tuple[object, Any]]
    _tasks_tracked: dict[int, dict[int, Any]]

    def _attach(self, task: Task) -> None:
        raise NotImplementedError

    def _handles(self) -> Sequence[WorkerHandle]:
        """The worker handles of this IMap's settings (``imap._pool.make_handles``)."""
        raise NotImplementedError

    @property
    def started(self) -> bool:
        return self._state is _State.STARTED

    @property
    def buffer_size(self) -> int | None:
        """The buffer in force for the current run (items), None when not started."""
        feeder = self._feeder
        return feeder.buffer_size if feeder is not None else None

    def _not_started(self) -> NoReturn:
        """next(imap) without a task 0 (before add_task, after stop())."""
        raise RuntimeError(f"{self.name} is not started: add tasks, then call start() "
                           f"(after stop() the tasks are removed)")

    @property
    def buffer_limit(self) -> int | None:
        """The buffer in force now (items): ``buffer_size``, or fewer for a default buffer
        once the items' size is measured (at most about 256 MiB of them); None when not
        started."""
        feeder = self._feeder
        return feeder.limit() if feeder is not None else None

    @property
    def buffer_used(self) -> int | None:
        """Items read from the inputs and not yet taken by a reader (now; a snapshot that
        may be off by a batch while threads run), None when not started."""
        feeder = self._feeder
        return feeder.used() if feeder is not None else None

    def start(self, stages: Iterable[int] | None = None) -> None:
        """Start the workers and the feeder. Raises WorkerStartError if a worker cannot start.

        ``stages`` (default both): 1 starts the workers and makes the results readable
        (``started`` is True, a reader waits for results), 2 starts the feeder. Pipelines
        whose IMaps read each other's results start every IMap's stage 1 first, then every
        stage 2, so no feeder reads an IMap that is not started yet (as the original did).
        """
        wanted = (1, 2) if stages is None else tuple(stages)
        if not set(wanted) <= {1, 2}:
            raise ValueError(f"{self.name}: start stages are 1 and 2, not {wanted!r}")
        if 1 in wanted:
            self._start_workers()
        if 2 in wanted:
            with self._lock:
                if self._state is not _State.STARTED:
                    raise RuntimeError(f"{self.name}: start stage 2 needs stage 1 first")
                feeder = self._feeder
            assert feeder is not None
            feeder.start()

    def _start_workers(self) -> None:
        _main_guard.refuse_in_worker()    # a pool started by the main module imported again
        with self._lock:
            if self._state is not _State.IDLE:
                raise RuntimeError(f"{self.name} is already started; stop() it first")
            self._state = _State.STARTING
            self._stopped.clear()
            self._not_starting.clear()
            self._starter = threading.get_ident()
            count = len(self._tasks)
        pool = None
        try:
            pool = Pool(self._handles(), self._deliver, self.name)
            pool.start()
        except BaseException:   # a failure, or a signal: nothing started is left running
            try:
                if pool is not None:
                    pool.stop(forced=True)
            finally:
                with self._lock:
                    self._state = _State.IDLE
                    self._stopped.set()
                    self._not_starting.set()
            raise
        with self._lock:
            self._pool = pool
            feeder = InlineFeeder if self.worker_type == "inline" else Feeder
            self._feeder = feeder(self.name, pool, self.stride,
                                  buffer_size=self.buffer or 2 * max(1, count) * self.stride,
                                  batch_cap=max(1, math.ceil(self.stride / self._worker_total)),
                                  workers=self._worker_total)
            if self.buffer is None:      # the default buffer: also bounded in bytes
                self._feeder.byte_budget = DEFAULT_BUFFER_BYTES
            for task in self._tasks:     # with those added while the workers started
                self._attach(task)
            self._state = _State.STARTED   # only now may readers come in
            self._not_starting.set()
        _live.add(self)

    def stop(self, ends: object = None, forced: bool = False) -> None:
        """End every task, join every thread and worker, remove the tasks.

        Results not taken yet are discarded. The IMap can then take new tasks and be
        started again. ``forced=True`` kills process workers at once instead of letting them
        finish their current batch. ``ends`` is accepted for compatibility and ignored
        (every task is ended). A no-op when not started.
        """
        while True:
            with self._lock:
                state = self._state
                if state is _State.IDLE:
                    return
                if state is _State.STARTING and self._starter == threading.get_ident():
                    return    # inside its own start (a signal handler): the start undoes itself
                if state is _State.STARTED:
                    self._state = _State.STOPPING
                    tasks = list(self._tasks)
                    feeder, pool = self._feeder, self._pool
                    break
            if state is _State.STARTING:     # another thread starts it: stop it when done
                self._not_starting.wait()
                continue
            self._stopped.wait()             # another thread stops it
            return
        try:
            self._stop_run(tasks, feeder, pool, forced)
        finally:
            with self._lock:
                self._tasks = []
                self._by_id = {}
                self._by_key = {}
                self._next_id = 0
                self._next0 = self._not_started
                self._iterators = {}
                self._tasks_tracked = {}
                self._pool = None
                self._feeder = None
                self._state = _State.IDLE
                self._stopped.set()
            _live.discard(self)

    def _stop_run(self, tasks: list[Task], feeder: Feeder | None, pool: Pool | None,
                  forced: bool) -> None:
        """Steps 1-3 of the shutdown order (module docstring)."""
        readers = list({id(t.source): t.source for t in tasks if t.own_source}.values())
        for source in readers:
            source.close()
        reason = RuntimeError("stop() was called")
        for task in tasks:
            task.close(reason)
        if feeder is not None:
            feeder.stop()
        if pool is not None:
            pool.stop(forced=forced)
        deadline = time.monotonic() + FEEDER_GRACE
        threads = [feeder.thread] if feeder is not None and feeder.thread.ident else []
        threads += [s.thread for s in readers if s.thread is not None]
        stuck = []
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    stuck.append(thread.name)
        if stuck:
            message = (f"{self.name}: {', '.join(stuck)} blocked inside a task's input (or "
                       f"its take()) and abandoned (daemon threads); make the input end, or "
                       f"see the stop on its own")
            warn_safely(message, stacklevel=3)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(forced=exc_type is not None)

    # -- results from the pool -------------------------------------------------------------

    def _deliver(self, batch: Batch, values: list[Any], errors: dict[int, BaseException] | None,
                 elapsed: float) -> None:
        feeder = batch.task.owner      # of an earlier run: its feeder (stopped)
        task = self._by_key.get(batch.task.key)
        if task is not None:           # else a removed task, or a batch of an earlier run
            if errors:
                decorate(errors, batch.items)
            if not batch.isolated and errors is None:
                task.learn(len(values), elapsed, feeder.batch_cap, batch.nbytes)
            task.deliver(batch.start, values, errors)
        if feeder is not None:         # after the results are in: "nothing in flight"
            feeder.delivered(batch)    # then means "every result is in its task"



@atexit.register
def _stop_live_imaps() -> None:
    """An IMap left running at interpreter exit is stopped, so exit never hangs.

    Registered with threading too, so that it runs before every atexit handler: in
    particular before multiprocessing's, which terminates daemon processes and joins the
    others (a slot would replace a terminated worker, and exit would wait for it)."""
    for imap in list(_live):
        try:
            imap.stop(forced=True)
        except Exception:
            log.debug("error stopping %s at exit", imap, exc_info=True)


threading._register_atexit(_stop_live_imaps)  # type: ignore[attr-defined]  # private, no stub
