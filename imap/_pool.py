"""The pool: one slot thread per worker, moving batches from a dispatch queue to workers.

    IMap feeder --submit(Batch)--> dispatch (queue.SimpleQueue, owned by the pool)
    slot thread i: batch = dispatch.get(); handle_i.run(batch); deliver(batch, ...)
                   on WorkerLost: blame the item (if known), re-queue the others, reopen

The dispatch queue is unbounded in type but bounded in practice: every queued item holds
one of the IMap's buffer slots. Workers take batches as they become idle, so slow and fast
workers balance themselves.

Shutdown order (stop):
 1. ``stopping`` is set: slots drop batches they take from now on
 2. forced: every handle is killed, so a slot blocked in run() returns at once
 3. one _STOP per slot is queued; every slot thread closes its handle and is joined
"""
from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import _config
from ._errors import WorkerDiedError, WorkerStartError
from .backends import _shm
from .backends.base import Batch, WorkerHandle, WorkerLost

log = logging.getLogger("imap")

_STOP = object()
#: seconds to wait for a slot thread that is busy in user code at a non-forced stop
#: before giving up on it (threads cannot be killed; the thread is a daemon)
JOIN_GRACE = 5.0
#: an item re-run alone after its worker died is retried this often when it is not clear
#: that it was running when the worker was lost; then it is blamed
MAX_ATTEMPTS = 2

Deliver = Callable[[Batch, list, "dict | None", float], None]


class _Slot:
    def __init__(self, index: int, handle: WorkerHandle):
        self.index = index
        self.handle = handle
        self.thread: threading.Thread | None = None
        self.opened = threading.Event()
        self.open_error: BaseException | None = None


class Pool:
    """Runs batches on a set of worker handles; results go to ``deliver``."""

    def __init__(self, handles: Sequence[WorkerHandle], deliver: Deliver, name: str):
        self._slots = [_Slot(i, h) for i, h in enumerate(handles)]
        self._deliver = deliver
        self._name = name
        self._dispatch: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0
        self._broken: str | None = None
        self._stopping = False

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Open every worker (each in its own slot thread) and wait until all are ready.

        Workers are started by their slot thread so that a process worker, which dies
        with the thread that forked it (PR_SET_PDEATHSIG), lives exactly as long as its slot.
        """
        for slot in self._slots:
            slot.thread = threading.Thread(target=self._serve_slot, args=(slot,), daemon=True,
                                           name=f"{self._name}-slot-{slot.index}")
            slot.thread.start()
        errors = []
        for slot in self._slots:
            slot.opened.wait()
            if slot.open_error is not None:
                errors.append(slot.open_error)
        if errors:
            self.stop(forced=True)
            first = errors[0]
            if isinstance(first, WorkerStartError):
                raise first
            raise WorkerStartError(f"cannot start worker {self._slots[0].handle.name}: "
                                   f"{first}") from first
        with self._lock:
            self._live = len(self._slots)

    def stop(self, forced: bool = False) -> None:
        self._stopping = True
        if forced:
            for slot in self._slots:
                _quietly(slot.handle.kill)
        for _ in self._slots:
            self._dispatch.put(_STOP)
        for slot in self._slots:
            if slot.thread is None:
                continue
            slot.thread.join(None if forced else JOIN_GRACE)
            if slot.thread.is_alive():
                _quietly(slot.handle.kill)
                slot.thread.join(JOIN_GRACE)
            if slot.thread.is_alive():
                log.warning("%s: worker %s is still busy in user code and is abandoned "
                            "(a daemon thread; threads cannot be killed)",
                            self._name, slot.handle.name)

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
        ends (stop, or a worker that could not be replaced). Its items and results are
        referenced by this frame only, so the slot keeps no reference to them while it
        waits for the next batch (an Executor's caller may wait for their collection)."""
        handle = slot.handle
        batch = self._dispatch.get()
        if batch is _STOP:
            return False
        if self._stopping:
            return True
        try:
            values, errors, elapsed = handle.run(batch)
        except WorkerLost as lost:
            if self._stopping:
                return True
            self._recover(batch, handle, lost)
            return self._reopen(slot, lost)
        except BaseException as exc:  # noqa: BLE001 - a bug: fail the batch, go on
            log.exception("%s: worker %s failed on a batch", self._name, handle.name)
            self._deliver(batch, [None] * len(batch.items),
                          {i: exc for i in range(len(batch.items))}, 0.0)
            return True
        self._deliver(batch, values, errors, elapsed)
        return True

    def _recover(self, batch: Batch, handle: WorkerHandle, lost: WorkerLost) -> None:
        """A worker died with ``batch``: blame one item if known, re-queue the others."""
        position = lost.position
        task = batch.task
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
            error = TimeoutError(f"item {index} of task {task.task_id} ran longer than its "
                                 f"item_timeout of {task.item_timeout} s; worker "
                                 f"{handle.name} {lost.message.split(' after ')[0]} and was "
                                 f"replaced")
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

    def _reopen(self, slot: _Slot, lost: WorkerLost) -> bool:
        """Replace a lost worker; when that fails the slot retires (False)."""
        handle = slot.handle
        _quietly(handle.kill)
        try:
            handle.open()
            return True
        except BaseException as exc:  # noqa: BLE001
            log.error("%s: cannot replace worker %s (%s); it is retired", self._name,
                      handle.name, exc)
        with self._lock:
            self._live -= 1
            if self._live > 0:
                return False
            self._broken = (f"no worker is left: the last one, {handle.name}, {lost.message} "
                            f"and could not be replaced")
            broken = self._broken
        self._drain(broken)
        return False

    def _drain(self, reason: str) -> None:
        """No worker is left: fail every queued batch in place."""
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
        errors = {i: WorkerDiedError(f"item {batch.start + i} of task {batch.task.task_id} "
                                     f"cannot be evaluated: {reason}", task=batch.task.task_id,
                                     index=batch.start + i)
                  for i in range(len(batch.items))}
        self._deliver(batch, [None] * len(batch.items), errors, 0.0)


def make_handles(imap: Any) -> list[WorkerHandle]:
    """The worker handles of an IMap's settings: threads or processes, then remote slots."""
    handles: list[WorkerHandle] = []
    if imap.worker_num:
        if imap.worker_type == "thread":
            from .backends.thread import ThreadHandle
            handles += [ThreadHandle(i) for i in range(imap.worker_num)]
        else:
            from .backends.process import ProcessHandle
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


def _quietly(call) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - best effort during shutdown
        log.debug("ignored error during shutdown", exc_info=True)
