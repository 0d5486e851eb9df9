"""Process workers: one local process per slot, behind a duplex pipe.

    slot thread (parent)                          worker process (_worker_main)
    ('task', key) + dill payload   --pipe-->      load the function once per task
    ('batch', key, task, start, tracked) + items --> evaluate the items
                                   <--pipe--      reply: (values, error records, elapsed)
    'exit'                         --pipe-->      return

A message to a worker is two byte frames (``send_bytes``): a pickled header, then for a task
or a batch the payload, so items are pickled once, by the slot thread, with protocol 5; a
reply is one frame: (shared-memory descriptor or None, pickled reply).

Death: the slot waits on the pipe *and* the process sentinel, so a worker that exits,
crashes or is killed is noticed at once, without polling. In tracked batches the worker
writes the position of the item it evaluates into a small shared array, so the death is
blamed on that item. Workers set PR_SET_PDEATHSIG (Linux) and die with the thread that
started them (their slot thread), so a parent killed with SIGKILL leaves no worker behind;
they ignore SIGINT, so Ctrl-C reaches only the parent, which stops the pool.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing import connection

from .. import _evaluate
from .._errors import WorkerStartError, rebuild_error
from . import _shm
from .base import Batch, WorkerHandle, WorkerLost

PROTOCOL = 5
#: a worker that does not exit after 'exit' within this many seconds is killed
EXIT_GRACE = 2.0
# Forks are serialised: a pipe end created for one child must not leak into a sibling
# forked at the same moment from another slot thread (it would hide that child's death).
_spawn_lock = threading.Lock()


def _set_parent_death_signal(expected_parent: int | None) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)     # libc is among this process's symbols
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)  # the parent died before prctl took effect


def _keep_freed_memory() -> None:
    """glibc: serve large allocations from the heap and keep freed memory for reuse.

    A large payload copied out of shared memory otherwise lands in fresh mmap'd pages
    whose page faults cost three times the copy itself (45 ms instead of 12 ms for 64 MiB
    here). The worker's memory then stays at its peak instead of shrinking back; that is
    the trade made for workers of pools with the shared-memory transport on.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)     # this process's symbols, libc's among them (no search)
        libc.mallopt(-4, 0)          # M_MMAP_MAX: no mmap for large blocks
        libc.mallopt(-1, 1 << 30)    # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap
    except (OSError, AttributeError):
        pass


def _worker_main(conn, progress_array, expected_parent, shm_settings) -> None:
    """The loop of a worker process.

    ``shm_settings`` is None (everything through the pipe) or ``(threshold, prefix)``:
    buffers of at least ``threshold`` bytes travel through shared memory (see _shm.py).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_parent_death_signal(expected_parent)
    if shm_settings:
        _keep_freed_memory()
    progress = memoryview(progress_array).cast("B").cast("q")
    reader = _shm.Reader()
    writer = _shm.Writer(shm_settings[1], shm_settings[0]) if shm_settings else None
    calls: dict = {}
    load_errors: dict = {}
    try:
        while True:
            try:
                header = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return
            kind = header[0]
            if kind == "exit":
                return
            payload = conn.recv_bytes()
            if kind == "task":
                key = header[1]
                try:
                    calls[key] = _evaluate.load_function(payload)
                except BaseException as exc:  # noqa: BLE001 - reported in place of every item
                    load_errors[key] = _evaluate.error_record(
                        exc, "exception" if isinstance(exc, ImportError) else "serialization",
                        f"the function of task {header[2]} cannot be loaded in the worker: "
                        f"{type(exc).__name__}: {exc}")
                continue
            descriptor, reply = _run_batch(calls, load_errors, header, payload, progress,
                                           reader, writer)
            # one frame: the descriptor of what went through shared memory, and the reply
            conn.send_bytes(pickle.dumps((descriptor, reply), PROTOCOL))
    finally:
        reader.close()
        if writer is not None:
            writer.close()


def _run_batch(calls, load_errors, header, payload, progress, reader, writer):
    """Evaluate one batch message; return (shared-memory descriptor or None, reply)."""
    _, key, task_id, start, tracked, descriptor = header
    try:
        items = reader.loads(payload, descriptor)
    except Exception as exc:  # noqa: BLE001 - the owner splits the batch and retries
        record = _evaluate.serialization_record(
            f"the batch at item {start} of task {task_id} cannot be unpickled", exc)
        return None, pickle.dumps((None, {-1: record}, 0.0), PROTOCOL)
    if key in load_errors:
        records = dict.fromkeys(range(len(items)), load_errors[key])
        return None, pickle.dumps(([None] * len(items), records, 0.0), PROTOCOL)
    call = calls[key]
    if tracked:
        values, errors, elapsed = _evaluate.evaluate_tracked(call, items, progress)
    else:
        values, errors, elapsed = _evaluate.evaluate(call, items)
    del items
    if writer is None:
        return None, _evaluate.encode_reply(values, errors, elapsed, task_id, start)
    out = [None]

    def dumps(obj):
        data, out[0] = writer.dumps(obj)
        return data
    reply = _evaluate.encode_reply(values, errors, elapsed, task_id, start, dumps)
    return out[0], reply


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped responding"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name} (exit code {exitcode})"
    return f"exited with code {exitcode}"


class ProcessHandle(WorkerHandle):
    """A local worker process."""

    def __init__(self, index: int, context, pool_name: str, shm_threshold: int = 0,
                 shm_prefix: str = ""):
        self.index = index
        self.name = f"process #{index}"
        self._context = context
        self._pool_name = pool_name
        self._process = None
        self._conn = None
        self._progress = None
        self._loaded: set = set()
        self._shm_threshold = shm_threshold
        self._shm_prefix = f"{shm_prefix}w{index}_"
        self._writer: _shm.Writer | None = None
        self._reader = _shm.Reader()

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        context = self._context
        expected = os.getpid() if context.get_start_method() != "forkserver" else None
        shm_settings = None
        if self._shm_threshold:
            _shm.sweep(self._shm_prefix)  # what a killed predecessor may have left
            self._writer = _shm.Writer(self._shm_prefix + "in", self._shm_threshold)
            shm_settings = (self._shm_threshold, self._shm_prefix + "out")
        with _spawn_lock:
            parent_conn, child_conn = context.Pipe(duplex=True)
            progress = context.RawArray("q", 2)
            progress[0] = -1
            process = context.Process(target=_worker_main,
                                      args=(child_conn, progress, expected, shm_settings),
                                      name=f"{self._pool_name}-worker-{self.index}", daemon=True)
            try:
                process.start()
            except Exception as exc:
                parent_conn.close()
                raise WorkerStartError(f"cannot start a worker process: {exc}") from exc
            finally:
                child_conn.close()
        self._process, self._conn, self._progress = process, parent_conn, progress
        self._loaded = set()
        self.name = f"process {process.pid}"

    def close(self) -> None:
        process, conn = self._process, self._conn
        if process is None:
            return
        self._process = self._conn = None
        try:
            conn.send_bytes(pickle.dumps(("exit",), PROTOCOL))
        except (OSError, ValueError):
            pass
        process.join(EXIT_GRACE)
        if process.exitcode is None:
            process.kill()
            process.join()
        conn.close()
        process.close()
        self._release_shared_memory()

    def _release_shared_memory(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._reader.close()
        if self._shm_threshold:
            _shm.sweep(self._shm_prefix)

    def kill(self) -> None:
        process = self._process
        if process is not None:
            try:
                process.kill()
            except (OSError, ValueError):
                pass
            # close() (by the slot thread) joins it and releases the pipe

    # -- work ------------------------------------------------------------------------------

    def run(self, batch: Batch):
        spec = batch.task
        if spec.key not in self._loaded:
            self._send(pickle.dumps(("task", spec.key, spec.task_id), PROTOCOL), spec.payload)
            self._loaded.add(spec.key)
        try:
            payload = self._dumps(batch.items)
        except Exception:  # noqa: BLE001 - find the items that cannot be pickled
            return self._run_split(batch, reason="pickle")
        try:
            values, records, elapsed = self._round_trip(batch, payload)
        except _UnreadableReply:  # a result cannot be unpickled here: find it, alone
            return self._run_split(batch, reason="reply")
        if values is None:  # the worker could not unpickle the batch
            return self._run_split(batch, reason="unpickle")
        return values, _rebuild(records), elapsed

    def _run_split(self, batch: Batch, reason: str):
        """Slow path: send the items one by one so a bad one fails alone, in place."""
        values, errors, elapsed = [None] * len(batch.items), {}, 0.0
        for position, item in enumerate(batch.items):
            index = batch.start + position
            try:
                payload = self._dumps([item])
            except Exception as exc:  # noqa: BLE001
                errors[position] = rebuild_error(_evaluate.serialization_record(
                    f"item {index} of task {batch.task.task_id} cannot be pickled", exc))
                continue
            single = Batch(batch.task, index, [item], tracked=True)
            try:
                item_values, records, seconds = self._round_trip(single, payload)
            except WorkerLost as lost:
                raise WorkerLost(lost.message, position, lost.exitcode, lost.timed_out) from None
            except _UnreadableReply as unreadable:
                errors[position] = rebuild_error(_evaluate.serialization_record(
                    f"the result of item {index} of task {batch.task.task_id} cannot be "
                    f"unpickled here", unreadable.__cause__))
                continue
            elapsed += seconds
            if item_values is None:
                errors[position] = rebuild_error(records[-1])
                continue
            values[position] = item_values[0]
            if records:
                errors[position] = rebuild_error(records[0])
        return values, errors or None, elapsed

    def _dumps(self, items: list):
        """Pickle a batch: ``(data, shared-memory descriptor or None)``."""
        if self._writer is None:
            return pickle.dumps(items, PROTOCOL), None
        return self._writer.dumps(items)

    def _round_trip(self, batch: Batch, payload):
        data, descriptor = payload
        header = ("batch", batch.task.key, batch.task.task_id, batch.start, batch.tracked,
                  descriptor)
        self._progress[0] = -1
        self._send(pickle.dumps(header, PROTOCOL), data)
        reply_descriptor, reply = pickle.loads(self._receive(batch))
        batch.nbytes += _size(data, descriptor) + _size(reply, reply_descriptor)
        try:
            return self._reader.loads(reply, reply_descriptor)
        except Exception as exc:  # noqa: BLE001 - e.g. a result's class unknown here
            raise _UnreadableReply() from exc

    def _send(self, header: bytes, payload: bytes) -> None:
        try:
            self._conn.send_bytes(header)
            self._conn.send_bytes(payload)
        except (OSError, ValueError, AttributeError):
            raise self._lost(None) from None

    def _receive(self, batch: Batch) -> bytes:
        conn, process = self._conn, self._process
        if conn is None:
            raise self._lost(batch)
        limit = batch.task.item_timeout
        while True:
            ready = connection.wait([conn, process.sentinel], self._until_overdue(limit))
            if conn in ready:
                try:
                    return conn.recv_bytes()
                except (EOFError, OSError):
                    raise self._lost(batch) from None
            if process.sentinel in ready:
                if not conn.poll():
                    raise self._lost(batch)
                continue
            if self._until_overdue(limit) == 0:   # the current item ran past item_timeout
                position = self._progress[0]
                process.kill()
                process.join()
                raise WorkerLost(f"was killed after item {batch.start + position} ran longer "
                                 f"than {limit} s", position, process.exitcode, timed_out=True)

    def _until_overdue(self, limit: float | None) -> float | None:
        """Seconds until the item being evaluated exceeds ``limit`` (0: it did; None: no
        limit, or no item is running yet)."""
        if limit is None or self._progress[0] < 0:
            return None if limit is None else limit
        running = (time.monotonic_ns() - self._progress[1]) / 1e9
        return max(0.0, limit - running)

    def _lost(self, batch: Batch | None) -> WorkerLost:
        process = self._process
        exitcode = None
        if process is not None:
            process.join(1.0)
            exitcode = process.exitcode
        position = None
        if batch is not None and batch.tracked and self._progress is not None:
            position = self._progress[0] if self._progress[0] >= 0 else None
        return WorkerLost(describe_exit(exitcode), position, exitcode)


class _UnreadableReply(Exception):
    """The worker's reply could not be unpickled in this process (the cause is chained)."""


def _size(data: bytes, descriptor) -> int:
    """Bytes moved by one message: the pickle plus what went through shared memory."""
    if descriptor is None:
        return len(data)
    return len(data) + sum(span[1] for span in descriptor[1])


def _rebuild(records):
    if not records:
        return None
    return {position: rebuild_error(record) for position, record in records.items()}
