"""The worker side of a process pool: the loop a worker process runs, whoever started it
(imap's fork server, or multiprocessing with fork, spawn or its forkserver).

    parent's slot thread (process.py)             worker process (worker_main)
                                   <--pipe--      HELLO once it is ready
    ('task', key) + dill payload   --pipe-->      load the function once per task
    ('batch', key, task, start, tracked, descriptor) + items --> evaluate the items
                                   <--pipe--      (shared-memory descriptor, reply)
    'exit'                         --pipe-->      return

``progress`` (two int64 the parent reads): the position of the item being evaluated (tracked
batches) and when it started; BUSY while any other part of a batch is handled; IDLE between
batches. The parent reads it after a death to blame an item, the batch, or nothing.

Self-contained apart from ``imap._evaluate`` and ``_shm``: a worker imports nothing else.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .. import _evaluate
from .._evaluate import PROTOCOL
from . import _shm
from ._prctl import die_with_parent

HELLO = b"imap-worker-ready"
#: progress[0] while a worker handles a batch outside the evaluation of a known item
BUSY = -2
IDLE = -1
#: None, or (threshold in bytes, shared-memory name prefix) for a worker's replies
ShmSettings = tuple[int, str] | None


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


def _close_forkservers_alive_pipe() -> None:
    """In a worker of multiprocessing's forkserver: close the copy of the fork server's
    'alive' pipe every such worker receives. The fork server exits when every holder of that
    pipe is gone; with workers holding it, it outlived a parent killed with SIGKILL (and the
    workers with it, since they die with the fork server) until their items ended."""
    forkserver = sys.modules.get("multiprocessing.forkserver")
    if forkserver is None:
        return
    state: Any = forkserver._forkserver
    if state._forkserver_alive_fd is not None:
        try:
            os.close(state._forkserver_alive_fd)
        except OSError:
            pass
        state._forkserver_alive_fd = None


def process_target(conn: Connection, progress_array: Any, expected_parent: int | None,
                    shm_settings: ShmSettings, started_by: str) -> None:
    """The target of a multiprocessing Process (fork, spawn, multiprocessing's forkserver)."""
    if started_by == "forkserver":
        _close_forkservers_alive_pipe()
    die_with_parent(expected_parent)
    worker_main(conn, progress_array, shm_settings)


def worker_main(conn: Connection, progress_array: Any, shm_settings: ShmSettings) -> None:
    """The loop of a worker process.

    ``shm_settings`` is None (everything through the pipe) or ``(threshold, prefix)``:
    buffers of at least ``threshold`` bytes travel through shared memory (see _shm.py).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if shm_settings:
        _keep_freed_memory()
    progress = memoryview(progress_array).cast("B").cast("q")
    reader = _shm.Reader()
    writer = _shm.Writer(shm_settings[1], shm_settings[0]) if shm_settings else None
    calls: dict[int, Callable[[Any], Any]] = {}
    load_errors: dict[int, tuple[Any, ...]] = {}
    try:
        conn.send_bytes(HELLO)
        while True:
            header = pickle.loads(conn.recv_bytes())
            kind = header[0]
            if kind == "exit":
                return
            payload = conn.recv_bytes()
            if kind == "task":
                _load_task(calls, load_errors, header, payload)
                continue
            progress[0] = BUSY
            descriptor, reply = _run_batch(calls, load_errors, header, payload, progress,
                                           reader, writer)
            # one frame: the descriptor of what went through shared memory, and the reply
            conn.send_bytes(pickle.dumps((descriptor, reply), PROTOCOL))
            progress[0] = IDLE
    except (EOFError, OSError):
        return      # the parent is gone or hung up: nobody to answer, nothing to report
    finally:
        reader.close()
        if writer is not None:
            writer.close()


def _load_task(calls: dict[int, Callable[[Any], Any]], load_errors: dict[int, tuple[Any, ...]],
               header: tuple[Any, ...], payload: bytes) -> None:
    key = header[1]
    try:
        calls[key] = _evaluate.load_function(payload)
    except BaseException as exc:  # noqa: BLE001 - reported in place of every item
        exc.imap_unloadable_task = header[2]   # type: ignore[attr-defined]  # the pool logs it
        load_errors[key] = _evaluate.error_record(
            exc, "exception" if isinstance(exc, ImportError) else "serialization",
            f"the function of task {header[2]} cannot be loaded in the worker: "
            f"{type(exc).__name__}: {exc}")


def _run_batch(calls: dict[int, Callable[[Any], Any]], load_errors: dict[int, tuple[Any, ...]],
               header: tuple[Any, ...], payload: bytes, progress: memoryview,
               reader: _shm.Reader, writer: _shm.Writer | None) -> tuple[Any, bytes]:
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
        progress[0] = BUSY
    else:
        values, errors, elapsed = _evaluate.evaluate(call, items)
    del items
    if writer is None:
        return None, _evaluate.encode_reply(values, errors, elapsed, task_id, start)
    out: list[Any] = [None]

    def dumps(obj: Any) -> bytes:
        data, out[0] = writer.dumps(obj)
        return data
    reply = _evaluate.encode_reply(values, errors, elapsed, task_id, start, dumps)
    return out[0], reply
