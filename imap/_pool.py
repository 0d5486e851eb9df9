"""The pool: one slot thread per worker, moving batches from a dispatch queue to workers.

    IMap feeder --submit(Batch)--> dispatch (queue.SimpleQueue, owned by the pool)
    slot thread i: batch = dispatch.get(); handle_i.run(batch); deliver(batch, ...)
                   on WorkerLost: blame the item (if known), re-queue the others, reopen

The dispatch queue is unbounded in type but bounded in practice: every queued item holds
one of the IMap's buffer slots. Workers take batches as they become idle, so slow and fast
workers balance themselves.

Start failures and the broken state. A worker that cannot be started, or that dies before it
began any work and before it returned anything (a main module its process cannot import, a
missing ``__main__`` guard, a crash while it loads a function), is a *start failure*: no
item is to blame, so its batch runs again as it was (``MAX_REQUEUE`` times at most). A slot
gives up after ``handle.start_attempts`` start failures in a row (a warning: the pool is
slower). The pool becomes BROKEN when no result was ever delivered and ``BROKEN_AFTER``
start failures came in a row, at least one from every live slot; or when no slot is left.
Then every queued and later batch fails at once, each item with one ``BrokenPoolError``
naming the first failure's cause and the remedy (logged once at ERROR), instead of one
process started and lost per item. A worker lost with its fork server is not a start failure
and no item's fault either: its batch runs again.

Shutdown order (stop):
 1. ``stopping`` is set: slots drop batches they take from now on
 2. forced: every handle is killed, so a slot blocked in run() (or open()) returns at once
 3. one _STOP per slot is queued; every started slot thread closes its handle and is joined
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import _config
from ._errors import BrokenPoolError, WorkerDiedError, WorkerStartError, warn_safely
from .backends import _forkserver, _main_guard, _shm
from .backends.base import Batch, WorkerHandle, WorkerLost

if TYPE_CHECKING:
    from ._imap import IMap

log = logging.getLogger(__name__)

_STOP = object()
#: seconds to wait for a slot thread that is busy in user code at a non-forced stop
#: before giving up on it (threads cannot be killed; the thread is a daemon)
JOIN_GRACE = 5.0
#: an item re-run alone after its worker died is retried this often when it is not clear
#: that it was running when the worker was lost; then it is blamed
MAX_ATTEMPTS = 2
#: a batch whose worker died before it began runs again this often; one whose worker died
#: with its fork server more often (a function that kills the fork server is still bounded)
MAX_REQUEUE = 3
MAX_REQUEUE_SERVER_DIED = 10
#: start failures in a row, with no result ever delivered, that make the pool broken
BROKEN_AFTER = 3

Deliver = Callable[[Batch, list[Any], "dict[int, BaseException] | None", float], None]


class _Slot:
    def __init__(self, index: int, handle: WorkerHandle):
        self.index = index
        self.handle = handle
        self.thread: threading.Thread | None = None
        self.opened = threading.Event()
        self.open_error: BaseException | None = None
        self.replied = False     # its current worker returned a result
        self.failures = 0        # start failures in a row (until its worker returns a result)
        self.retired = False


class Pool:
    """Runs batches on a set of worker handles; results go to ``deliver``."""

    def __init__(self, handles: Sequence[WorkerHandle], deliver: Deliver, name: str):
        self._slots = [_Slot(i, h) for i, h in enumerate(handles)]
        self._deliver = deliver
        self._name = name
        self._dispatch: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0
        self._broken: str | None = None
        self._stopping = threading.Event()
        self._results = False            # a result was ever delivered
        self._failures_in_a_row = 0      # start failures since the last result
        self._first_failure: str | None = None
        self._unloadable: set[int] = set()   # tasks whose function a worker cannot load

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Open every worker (each in its own slot thread) and wait until all are ready.

        Workers are started by their slot thread so that a process worker, which dies
        with the thread that forked it (PR_SET_PDEATHSIG), lives exactly as long as its slot.
        An exception while waiting (a signal) stops what was started, then propagates.
        """
        with self._lock:
            self._live = len(self._slots)
        try:
            for slot in self._slots:
                slot.thread = threading.Thread(target=self._serve_slot, args=(slot,),
                                               daemon=True,
                                               name=f"{self._name}-slot-{slot.index}")
                slot.thread.start()
            for slot in self._slots:
                slot.opened.wait()
        except BaseException:
            self.stop(forced=True)
            raise
        errors = [slot.open_error for slot in self._slots if slot.open_error is not None]
        if errors:
            self.stop(forced=True)
            first = errors[0]
            if isinstance(first, WorkerStartError):
                raise first
            raise WorkerStartError(f"cannot start worker {self._slots[0].handle.name}: "
                                   f"{first}") from first

    def stop(self, forced: bool = False) -> None:
        """Stop every slot and worker (see the shutdown order). Never raises for a slot or
        worker that was only half started."""
        self._stopping.set()
        if forced:
            for slot in self._slots:
                _quietly(slot.handle.kill)
        for _ in self._slots:
            self._dispatch.put(_STOP)
        for slot in self._slots:
            thread = slot.thread
            if thread is None or thread.ident is None:   # never started
                continue
            thread.join(None if forced else JOIN_GRACE)
            if thread.is_alive():
                _quietly(slot.handle.kill)
                thread.join(JOIN_GRACE)
            if thread.is_alive():
                warn_safely(f"{self._name}: worker {slot.handle.name} is still busy in user "
                            f"code and is abandoned (a daemon thread: threads cannot be "
                            f"killed)")

    def submit(self, batch: Batch) -> None:
        with self._lock:
            broken = self._broken
        if broken is None:
            self._dispatch.put(batch)
        else:
            self._fail(batch, broken)

    # -- slot threads --------------------------------------------------------------------

    def _serve_slot(self, slot: _Slot) -> None:
        handle = slot.handle
        try:
            handle.open()
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            slot.open_error = exc
            slot.opened.set()
            return
        slot.opened.set()
        try:
            while self._serve_batch(slot):
                pass             # each batch in its own frame: nothing it held outlives it
        finally:
            _quietly(handle.close)

    def _serve_batch(self, slot: _Slot) -> bool:
        """Run the next batch of the dispatch queue on the slot's worker; False: the slot
        ends (stop, or retired: the other slots go on; a broken pool keeps its slots to
        fail what is still submitted). Its items and results are referenced by this frame
        only, so the slot keeps no reference to them while it waits for the next batch (an
        Executor's caller may wait for their collection)."""
        handle = slot.handle
        batch = self._dispatch.get()
        if batch is _STOP:
            return False
        if self._stopping.is_set():
            return True
        if self._broken is not None:
            self._fail(batch, self._broken)
            return True
        try:
            values, errors, elapsed = handle.run(batch)
        except WorkerLost as lost:
            if self._stopping.is_set():
                return True
            self._recover(batch, handle, lost)
            if lost.before_work and not slot.replied and not lost.server_died:
                self._start_failed(slot, f"worker {handle.name} {lost.message}")
            return not ((slot.retired or not self._reopen(slot)) and self._broken is None)
        except BaseException as exc:
            log.exception("%s: worker %s failed on a batch", self._name, handle.name)
            self._deliver(batch, [None] * len(batch.items),
                          {i: exc for i in range(len(batch.items))}, 0.0)
            return True
        if not slot.replied:
            self._replied(slot)
        if errors:
            self._note_unloadable(batch, errors)
        self._deliver(batch, values, errors, elapsed)
        return True

    def _recover(self, batch: Batch, handle: WorkerHandle, lost: WorkerLost) -> None:
        """A worker died with ``batch``: blame one item if known, re-queue the others."""
        position = lost.position
        task = batch.task
        limit = MAX_REQUEUE_SERVER_DIED if lost.server_died else MAX_REQUEUE
        if (lost.before_work or lost.server_died) and batch.attempts < limit:
            # not the items' fault: the worker died before it began, or with its fork server
            log.info("%s: worker %s %s before items %d..%d of task %d began: they run again",
                     self._name, handle.name, lost.message, batch.start,
                     batch.start + len(batch.items) - 1, task.task_id)
            self._dispatch.put(dataclasses.replace(batch, nbytes=0,
                                                   attempts=batch.attempts + 1))
            return
        if batch.isolated and position is None:
            # lost before it was seen running (a connection that dropped while idle, a
            # worker killed before the item started): try it elsewhere, twice at most
            if batch.attempts < MAX_ATTEMPTS and not lost.timed_out:
                self._dispatch.put(Batch(task, batch.start, batch.items, tracked=True,
                                         isolated=True, counted=batch.counted,
                                         attempts=batch.attempts + 1))
                return
            position = 0
        log.log(logging.INFO if lost.timed_out else logging.WARNING,
                "%s: worker %s lost while evaluating items %d..%d of task %d: %s",
                self._name, handle.name, batch.start, batch.start + len(batch.items) - 1,
                task.task_id, lost.message)
        if position is None:
            # unknown culprit: re-run each item alone; one that kills a worker again fails
            for offset, item in enumerate(batch.items):
                self._dispatch.put(Batch(task, batch.start + offset, [item], tracked=True,
                                         isolated=True, counted=batch.counted and offset == 0))
            return
        index = batch.start + position
        if lost.timed_out:
            error: BaseException = TimeoutError(
                f"item {index} of task {task.task_id} ran longer than its item_timeout of "
                f"{task.item_timeout} s; worker {handle.name} "
                f"{lost.message.split(' after ')[0]} and was replaced")
        else:
            error = WorkerDiedError(
                f"worker {handle.name} {lost.message} while evaluating item {index} of task "
                f"{task.task_id}", worker=handle.name, exitcode=lost.exitcode,
                task=task.task_id, index=index)
        if position > 0:
            self._dispatch.put(Batch(task, batch.start, batch.items[:position], tracked=True))
        self._deliver(Batch(task, index, batch.items[position:position + 1],
                            counted=batch.counted), [None], {0: error}, 0.0)
        if position + 1 < len(batch.items):
            self._dispatch.put(Batch(task, index + 1, batch.items[position + 1:], tracked=True))

    def _note_unloadable(self, batch: Batch, errors: dict[int, BaseException]) -> None:
        """A task whose function cannot be loaded in a worker (a bad @imports): each item
        fails in place with that error; it is logged once."""
        error = next(iter(errors.values()))
        task = getattr(error, "imap_unloadable_task", None)
        if task is None or task in self._unloadable:
            return
        self._unloadable.add(task)
        log.error("%s: %s (every item of task %d fails with this error)", self._name, error,
                  task)

    def _reopen(self, slot: _Slot) -> bool:
        """Replace a lost worker, trying again after start failures; False when the slot
        gives up (retired, the pool broken or stopping)."""
        handle = slot.handle
        _quietly(handle.kill)
        while not self._stopping.is_set() and self._broken is None and not slot.retired:
            _quietly(handle.close)
            try:
                handle.open()
            except BaseException as exc:  # noqa: BLE001 - counted, reported when it breaks
                self._start_failed(slot, _describe_failure(handle, exc))
                continue
            slot.replied = False
            return True
        return False

    def _replied(self, slot: _Slot) -> None:
        slot.replied = True
        with self._lock:
            slot.failures = 0
            self._results = True
            self._failures_in_a_row = 0

    def _start_failed(self, slot: _Slot, cause: str) -> None:
        """Count a start failure; retire the slot or break the pool when it is time."""
        handle = slot.handle
        with self._lock:
            slot.failures += 1
            self._failures_in_a_row += 1
            if self._first_failure is None:
                self._first_failure = cause
            first, count = self._first_failure, self._failures_in_a_row
            broken = None
            live = [s for s in self._slots if not s.retired]
            if (not self._results and count >= BROKEN_AFTER
                    and all(s.failures for s in live)):
                broken = (f"{count} workers in a row could not start or died before doing "
                          f"any work, and none ever returned a result. The first: {first}")
            elif slot.failures >= handle.start_attempts:
                slot.retired = True
                self._live -= 1
                if self._live == 0:
                    broken = (f"no worker is left: each failed to start "
                              f"{handle.start_attempts} time(s) in a row. The first failure: "
                              f"{first}")
        if broken is not None:
            self._break(broken)
        elif slot.retired:
            warn_safely(f"{self._name}: worker {handle.name} could not be replaced "
                        f"({cause}); the pool goes on with one worker fewer")

    def _break(self, reason: str) -> None:
        message = (f"{self._name} is broken: {reason}. Nothing more runs on this pool: fix "
                   f"the cause, then stop() and start() it again (or make a new IMap)")
        with self._lock:
            if self._broken is not None:
                return
            self._broken = message
        log.error("%s", message)
        self._drain(message)

    def _drain(self, reason: str) -> None:
        """The pool is broken: fail every queued batch in place."""
        while True:
            try:
                batch = self._dispatch.get_nowait()
            except queue.Empty:
                return
            if batch is _STOP:
                self._dispatch.put(_STOP)
                return
            self._fail(batch, reason)

    def _fail(self, batch: Batch, reason: str) -> None:
        errors: dict[int, BaseException] = {
            i: BrokenPoolError(f"item {batch.start + i} of task {batch.task.task_id} cannot be "
                               f"evaluated: {reason}", task=batch.task.task_id,
                               index=batch.start + i)
            for i in range(len(batch.items))}
        self._deliver(batch, [None] * len(batch.items), errors, 0.0)


def make_handles(imap: IMap[Any]) -> Sequence[WorkerHandle]:
    """The worker handles of an IMap's settings: Dask slots; or threads or processes, then
    remote slots."""
    if imap.worker_type == "dask":
        from .backends.dask import make_dask_handles
        return make_dask_handles(imap.worker_remote, imap.worker_num, imap.name)
    handles: list[WorkerHandle] = []
    if imap.worker_type == "inline":
        return handles               # the readers evaluate (imap._inline)
    if imap.worker_num:
        if imap.worker_type == "thread":
            from .backends.thread import ThreadHandle
            handles += [ThreadHandle(i) for i in range(imap.worker_num)]
        else:
            from .backends.process import ProcessHandle
            _main_guard.check_main_module(imap.start_method)
            if imap.start_method == "forkserver":
                _forkserver.prepare()
            context = multiprocessing.get_context(imap.start_method)
            if imap.start_method == "forkserver":
                # imported once by the fork server instead of by every worker
                context.set_forkserver_preload(list(_config.PRELOAD))
            prefix = _shm.pool_prefix()
            handles += [ProcessHandle(i, context, imap.name, imap.shm_threshold, prefix)
                        for i in range(imap.worker_num)]
    if imap.worker_remote:
        from .backends import remote
        handles += remote.make_remote_handles(imap.worker_remote, tls=imap.remote_tls,
                                              timeout=imap.remote_timeout)
    return handles


def _describe_failure(handle: WorkerHandle, exc: BaseException) -> str:
    text = str(exc)
    return text if text.startswith("worker ") else f"worker {handle.name}: {text}"


def _quietly(call: Callable[[], object]) -> None:
    """Kill or close a worker; one that fails may leave a process behind: a warning."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - best effort during shutdown, but said
        warn_safely(f"imap: cleaning up a worker failed ({getattr(call, '__qualname__', call)}"
                    f"): {type(exc).__name__}: {exc}")
