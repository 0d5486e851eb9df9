"""Process workers: one local process per slot, behind a duplex pipe.

    slot thread (parent)                          worker process (_worker_main)
    ('task', key) + dill payload   --pipe-->      load the function once per task
    ('batch', key, task, start, tracked) + items --> evaluate the items
                                   <--pipe--      reply: (values, error records, elapsed)
    'exit'                         --pipe-->      return

Every message is one or two byte frames (``send_bytes``): a pickled header, then for a task
or a batch the payload, so items are pickled once, by the slot thread, with protocol 5.

Death: the slot waits on the pipe *and* the process sentinel, so a worker that exits,
crashes or is killed is noticed at once, without polling. In tracked batches the worker
writes the position of the item it evaluates into a small shared array, so the death is
blamed on that item. Workers set PR_SET_PDEATHSIG (Linux) and die with the thread that
started them (their slot thread), so a parent killed with SIGKILL leaves no worker behind;
they ignore SIGINT, so Ctrl-C reaches only the parent, which stops the pool.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import signal
import sys
import threading
from multiprocessing import connection

from .. import _evaluate
from .._errors import WorkerStartError, rebuild_error
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
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)  # the parent died before prctl took effect


def _worker_main(conn, progress_array, expected_parent) -> None:
    """The loop of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_parent_death_signal(expected_parent)
    progress = memoryview(progress_array).cast("B").cast("q")
    calls: dict = {}
    load_errors: dict = {}
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
                    exc, "serialization" if not isinstance(exc, ImportError) else "exception",
                    f"the function of task {header[2]} cannot be loaded in the worker: "
                    f"{type(exc).__name__}: {exc}")
            continue
        _, key, task_id, start, tracked = header
        conn.send_bytes(_run_batch(calls, load_errors, key, task_id, start, tracked, payload,
                                   progress))


def _run_batch(calls, load_errors, key, task_id, start, tracked, payload, progress) -> bytes:
    items, record = _evaluate.decode_items(payload, task_id, start)
    if items is None:
        return pickle.dumps((None, {-1: record}, 0.0), PROTOCOL)
    if key in load_errors:
        records = dict.fromkeys(range(len(items)), load_errors[key])
        return pickle.dumps(([None] * len(items), records, 0.0), PROTOCOL)
    call = calls[key]
    if tracked:
        values, errors, elapsed = _evaluate.evaluate_tracked(call, items, progress)
    else:
        values, errors, elapsed = _evaluate.evaluate(call, items)
    return _evaluate.encode_reply(values, errors, elapsed, task_id, start)


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

    def __init__(self, index: int, context, pool_name: str):
        self.index = index
        self.name = f"process #{index}"
        self._context = context
        self._pool_name = pool_name
        self._process = None
        self._conn = None
        self._progress = None
        self._loaded: set = set()

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        context = self._context
        expected = os.getpid() if context.get_start_method() != "forkserver" else None
        with _spawn_lock:
            parent_conn, child_conn = context.Pipe(duplex=True)
            progress = context.RawArray("q", 1)
            progress[0] = -1
            process = context.Process(target=_worker_main, args=(child_conn, progress, expected),
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
            payload = pickle.dumps(batch.items, PROTOCOL)
        except Exception:  # noqa: BLE001 - find the items that cannot be pickled
            return self._run_split(batch, reason="pickle")
        values, records, elapsed = self._round_trip(batch, payload)
        if values is None:  # the worker could not unpickle the batch
            return self._run_split(batch, reason="unpickle")
        return values, _rebuild(records), elapsed

    def _run_split(self, batch: Batch, reason: str):
        """Slow path: send the items one by one so a bad one fails alone, in place."""
        values, errors, elapsed = [None] * len(batch.items), {}, 0.0
        for position, item in enumerate(batch.items):
            index = batch.start + position
            try:
                payload = pickle.dumps([item], PROTOCOL)
            except Exception as exc:  # noqa: BLE001
                errors[position] = rebuild_error(_evaluate.serialization_record(
                    f"item {index} of task {batch.task.task_id} cannot be pickled", exc))
                continue
            single = Batch(batch.task, index, [item], tracked=True)
            try:
                item_values, records, seconds = self._round_trip(single, payload)
            except WorkerLost as lost:
                raise WorkerLost(lost.message, position, lost.exitcode) from None
            elapsed += seconds
            if item_values is None:
                errors[position] = rebuild_error(records[-1])
                continue
            values[position] = item_values[0]
            if records:
                errors[position] = rebuild_error(records[0])
        return values, errors or None, elapsed

    def _round_trip(self, batch: Batch, payload: bytes):
        header = ("batch", batch.task.key, batch.task.task_id, batch.start, batch.tracked)
        self._progress[0] = -1
        self._send(pickle.dumps(header, PROTOCOL), payload)
        return pickle.loads(self._receive(batch))

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
        while True:
            ready = connection.wait([conn, process.sentinel])
            if conn in ready:
                try:
                    return conn.recv_bytes()
                except (EOFError, OSError):
                    raise self._lost(batch) from None
            if not conn.poll():
                raise self._lost(batch)

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


def _rebuild(records):
    if not records:
        return None
    return {position: rebuild_error(record) for position, record in records.items()}
