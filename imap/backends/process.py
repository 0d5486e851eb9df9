"""Process workers: one local process per slot, behind a duplex pipe (the parent's side;
the worker's loop is in ``_process_worker.py``).

    slot thread (parent)                          worker process (worker_main)
    start the process, wait for   <--pipe--       'hello' once it is ready
    ('task', key) + dill payload   --pipe-->      load the function once per task
    ('batch', key, task, start, tracked) + items --> evaluate the items
                                   <--pipe--      reply: (values, error records, elapsed)
    'exit'                         --pipe-->      return

A message to a worker is two byte frames (``send_bytes``): a pickled header, then for a task
or a batch the payload, so items are pickled once, by the slot thread, with protocol 5; a
reply is one frame: (shared-memory descriptor or None, pickled reply).

How workers start (``start_method``): 'forkserver' (the default) asks imap's fork server
(``_forkserver.py``: a copy of the program made while it had one thread; fast, nothing is
imported again), or multiprocessing's forkserver when the program had threads or the fork
server died; 'spawn' and 'fork' are multiprocessing's. A worker says 'hello' when it is
ready: one that dies before is a start failure, whose cause (exit code, signal, a missing
``__main__`` guard, a main module that cannot be imported again) ``open`` raises.

Death: the slot waits on the pipe *and* the process sentinel, so a worker that exits,
crashes or is killed is noticed at once, without polling. The worker writes into a small
shared array (``progress``) the position of the item it evaluates (tracked batches), BUSY
while it handles any batch, and -1 when idle: a death is blamed on that item, on the batch,
or on nothing (a death before the batch began: it is run again as it is). Workers set
PR_SET_PDEATHSIG (Linux) and die with their parent: the slot thread that started them (fork,
spawn) or their fork server, which dies with the program (and multiprocessing's forkserver
exits when the program is gone, since its workers no longer hold its 'alive' pipe); so a
parent killed with SIGKILL leaves no worker behind. Workers ignore SIGINT, so Ctrl-C reaches
only the parent, which stops the pool.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import threading
import time
from multiprocessing import connection
from typing import Any, cast

from .. import _evaluate
from .._errors import BrokenPoolError, WorkerStartError, rebuild_error, warn_safely
from . import _forkserver, _main_guard, _shm
from .._evaluate import PROTOCOL
from ._process_worker import HELLO, IDLE, ShmSettings, process_target
from .base import Batch, WorkerHandle, WorkerLost

#: a worker that does not exit after 'exit' within this many seconds is killed
EXIT_GRACE = 2.0
#: a worker that is not ready this many seconds after it was started is a start failure
START_TIMEOUT = 60.0
#: attempts to start a worker when its fork server dies meanwhile (waiting 0.05 s, then
#: twice as long each time)
START_ATTEMPTS = 5
#: how long a worker lost with exit code 255 waits for its forkserver to be seen dead
SERVER_EXIT_GRACE = 0.5
# Forks are serialised: a pipe end created for one child must not leak into a sibling
# forked at the same moment from another slot thread (it would hide that child's death).
_spawn_lock = threading.Lock()
_fallback_warned = False


class _ServerTroubleError(Exception):
    """The fork server died while a worker was being started: start it again."""


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

    def __init__(self, index: int, context: Any, pool_name: str, shm_threshold: int = 0,
                 shm_prefix: str = ""):
        self.index = index
        self.name = f"process #{index}"
        self._context = context
        self._method = context.get_start_method()
        self._pool_name = pool_name
        self._process: Any = None
        self._conn: Any = None
        self._progress: Any = None
        self._progress_map: Any = None
        self._loaded: set[int] = set()
        self._loading: int | None = None    # the task whose function was just sent
        self._server_pid: int | None = None  # multiprocessing's forkserver that forked it
        self._shm_threshold = shm_threshold
        self._shm_prefix = f"{shm_prefix}w{index}_"
        self._writer: _shm.Writer | None = None
        self._reader = _shm.Reader()

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Start a worker and wait until it is ready; raise WorkerStartError (BrokenPoolError
        when it died first, with the cause) if it cannot start."""
        shm_settings = None
        if self._shm_threshold:
            shm_settings = (self._shm_threshold, self._shm_prefix + "out")
        for attempt in range(START_ATTEMPTS):
            if self._shm_threshold:       # (again after a failed attempt closed it)
                _shm.sweep(self._shm_prefix)  # what a killed predecessor may have left
                self._writer = _shm.Writer(self._shm_prefix + "in", self._shm_threshold)
            try:
                self._start(shm_settings)
                self._loaded = set()
                self._loading = None
                self.name = f"process {self._process.pid}"
                self._await_hello()
                return
            except _ServerTroubleError as trouble:   # its fork server died meanwhile: again
                if attempt + 1 == START_ATTEMPTS:
                    raise WorkerStartError(f"cannot start a worker process: {trouble}") from None
                time.sleep(0.05 * 2 ** attempt)

    def _start(self, shm_settings: ShmSettings) -> None:
        if self._method == "forkserver":
            server = _forkserver.server()
            if server is not None:
                try:
                    self._start_served(server, shm_settings)
                    return
                except _forkserver.ForkServerGoneError:
                    _warn_fallback()
        reason = _main_guard.unimportable_main(self._method)
        if reason is not None:
            raise WorkerStartError(f"cannot start a worker process: {reason}")
        self._start_multiprocessing(shm_settings)

    def _start_served(self, server: _forkserver.ForkServer, shm_settings: ShmSettings) -> None:
        parent_end, child_end = socket.socketpair()
        conn = connection.Connection(parent_end.detach())
        try:
            self._process, self._progress, self._progress_map = _forkserver.start_worker(
                server, child_end.detach(), (shm_settings,))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._progress[0] = IDLE
        self._server_pid = None

    def _start_multiprocessing(self, shm_settings: ShmSettings) -> None:
        context, method = self._context, self._method
        expected = os.getpid() if method != "forkserver" else _stdlib_forkserver_pid()
        self._server_pid = expected if method == "forkserver" else None
        with _spawn_lock:
            parent_conn, child_conn = context.Pipe(duplex=True)
            progress = context.RawArray("q", 2)
            progress[0] = IDLE
            process = context.Process(target=process_target,
                                      args=(child_conn, progress, expected, shm_settings,
                                            method),
                                      name=f"{self._pool_name}-worker-{self.index}", daemon=True)
            try:
                process.start()
            except (EOFError, ConnectionError, FileNotFoundError, ChildProcessError) as exc:
                parent_conn.close()
                if method != "forkserver":
                    raise WorkerStartError(f"cannot start a worker process: {exc}") from exc
                raise _ServerTroubleError(f"multiprocessing's fork server failed: {exc!r}") from exc
            except Exception as exc:
                parent_conn.close()
                raise WorkerStartError(f"cannot start a worker process: {exc}") from exc
            finally:
                child_conn.close()
        self._process, self._conn, self._progress = process, parent_conn, progress

    def _await_hello(self) -> None:
        """Wait until the worker says it is ready; if it dies first, say why (raised)."""
        conn, process = self._conn, self._process
        ready = connection.wait([conn, process.sentinel], START_TIMEOUT)
        if conn in ready:
            try:
                if conn.recv_bytes() == HELLO:
                    return
            except (EOFError, OSError):
                pass
        if not ready:
            cause = f"was not ready within {START_TIMEOUT:g} s and was killed"
        else:
            process.join(1.0)
            if _died_with_its_server(process, process.exitcode, self._server_pid):
                self.close()
                raise _ServerTroubleError(f"its fork server died while worker {self.name} started")
            cause = self._start_cause(process)
        name, exitcode = self.name, process.exitcode
        self.close()
        raise BrokenPoolError(f"worker {name} {cause}", worker=name, exitcode=exitcode)

    def _start_cause(self, process: Any) -> str:
        """Why a worker died before it was ready."""
        if getattr(process, "lost_with_server", False):
            return "was lost with its fork server before it was ready"
        exitcode = process.exitcode
        if exitcode == _main_guard.EXIT_CODE:
            return _main_guard.guard_message(self._method)
        cause = f"{describe_exit(exitcode)} before it was ready"
        if isinstance(process, _forkserver.ServedProcess):
            return cause + " (its traceback, if any, is on stderr above)"
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        again = (f" (which first imports the main module {main} again)" if main else "")
        return (f"{cause}: a worker started with '{self._method}'{again} cannot run; its "
                f"traceback, if any, is on stderr above. Check that the main module and the "
                f"modules it imports load without errors in a new interpreter")

    def close(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is not None:
            try:
                conn.send_bytes(pickle.dumps(("exit",), PROTOCOL))
            except (OSError, ValueError):
                pass
            process.join(EXIT_GRACE)
            if process.exitcode is None:
                process.kill()
                process.join()
            conn.close()
            try:
                process.close()
            except ValueError:      # a multiprocessing Process that is somehow still running
                pass
            self._release_progress()
        self._release_shared_memory()   # also after a start that failed

    def _release_progress(self) -> None:
        if self._progress_map is not None:
            self._progress.release()
            self._progress_map.close()
            self._progress_map = None
        self._progress = None

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
            except (OSError, ValueError, AttributeError):
                pass
            # close() (by the slot thread) joins it and releases the pipe

    # -- work ------------------------------------------------------------------------------

    def run(self, batch: Batch) -> tuple[list[Any], dict[int, BaseException] | None, float]:
        spec = batch.task
        if spec.key not in self._loaded:
            self._loading = spec.task_id
            self._send(pickle.dumps(("task", spec.key, spec.task_id), PROTOCOL),
                       spec.payload or b"")
            self._loaded.add(spec.key)
        try:
            payload = self._dumps(batch.items)
        except Exception:  # noqa: BLE001 - find the items that cannot be pickled
            return self._run_split(batch, reason="pickle")
        try:
            values, records, elapsed = self._round_trip(batch, payload)
        except _UnreadableReplyError:  # a result cannot be unpickled here: find it, alone
            return self._run_split(batch, reason="reply")
        if values is None:  # the worker could not unpickle the batch
            return self._run_split(batch, reason="unpickle")
        return values, _rebuild(records), elapsed

    def _run_split(self, batch: Batch, reason: str
                   ) -> tuple[list[Any], dict[int, BaseException] | None, float]:
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
            except _UnreadableReplyError as unreadable:
                errors[position] = rebuild_error(_evaluate.serialization_record(
                    f"the result of item {index} of task {batch.task.task_id} cannot be "
                    f"unpickled here",   # raised "from" the unpickling error (_round_trip):
                    cast(BaseException, unreadable.__cause__)))
                continue
            elapsed += seconds
            if item_values is None:
                errors[position] = rebuild_error(records[-1])
                continue
            values[position] = item_values[0]
            if records:
                errors[position] = rebuild_error(records[0])
        return values, errors or None, elapsed

    def _dumps(self, items: list[Any]) -> tuple[bytes, Any]:
        """Pickle a batch: ``(data, shared-memory descriptor or None)``."""
        if self._writer is None:
            return pickle.dumps(items, PROTOCOL), None
        return self._writer.dumps(items)

    def _round_trip(self, batch: Batch, payload: tuple[bytes, Any]) -> Any:
        data, descriptor = payload
        header = ("batch", batch.task.key, batch.task.task_id, batch.start, batch.tracked,
                  descriptor)
        self._progress[0] = -1
        self._send(pickle.dumps(header, PROTOCOL), data)
        reply_descriptor, reply = pickle.loads(self._receive(batch))
        self._loading = None
        batch.nbytes += _size(data, descriptor) + _size(reply, reply_descriptor)
        try:
            return self._reader.loads(reply, reply_descriptor)
        except Exception as exc:
            raise _UnreadableReplyError() from exc

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
                    data: bytes = conn.recv_bytes()
                    return data
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
        return max(0.0, limit - float(running))

    def _lost(self, batch: Batch | None) -> WorkerLost:
        """What is known of a worker that just died: how, and in which item, if any."""
        process = self._process
        exitcode, server_died = None, False
        if process is not None:
            process.join(1.0)
            exitcode = process.exitcode
            server_died = _died_with_its_server(process, exitcode, self._server_pid)
        progress = self._progress[0] if self._progress is not None else IDLE
        position = progress if batch is not None and batch.tracked and progress >= 0 else None
        before_work = progress == IDLE
        if server_died:
            message = "was killed with its fork server, which died"
        else:
            message = describe_exit(exitcode)
            if before_work and self._loading is not None:
                message += f" while loading the function of task {self._loading}"
        return WorkerLost(message, position, exitcode, before_work=before_work,
                          server_died=server_died)


def _died_with_its_server(process: Any, exitcode: int | None, server_pid: int | None) -> bool:
    """True when a worker died because its fork server died (it dies with it)."""
    if isinstance(process, _forkserver.ServedProcess):
        return process.lost_with_server
    if exitcode != 255 or server_pid is None:
        return False       # 255: multiprocessing's forkserver could not report a code
    try:
        pidfd = os.pidfd_open(server_pid)
    except ProcessLookupError:
        return True        # reaped already: it died
    except (OSError, AttributeError):
        return False
    try:   # readable once it exited; it may still be exiting when its workers are gone
        return bool(connection.wait([pidfd], SERVER_EXIT_GRACE))
    finally:
        os.close(pidfd)


def _stdlib_forkserver_pid() -> int | None:
    """Start multiprocessing's forkserver if it is not running (again, if it died); its pid
    is the parent its workers die with."""
    from multiprocessing import forkserver
    state: Any = forkserver._forkserver
    try:
        forkserver.ensure_running()
    except ChildProcessError:   # it died and something else reaped it: forget it
        with state._lock:
            if state._forkserver_alive_fd is not None:
                os.close(state._forkserver_alive_fd)
            state._forkserver_alive_fd = state._forkserver_pid = None
            state._forkserver_address = None
        raise _ServerTroubleError("multiprocessing's fork server was gone") from None
    except OSError as exc:
        raise _ServerTroubleError(f"multiprocessing's fork server cannot start: {exc}") from exc
    pid: int | None = state._forkserver_pid
    return pid


def _warn_fallback() -> None:
    global _fallback_warned
    if _fallback_warned:
        return
    _fallback_warned = True
    warn_safely("imap's fork server died: worker processes now start with multiprocessing's "
                "forkserver (a new interpreter per program, slower starts)")


class _UnreadableReplyError(Exception):
    """The worker's reply could not be unpickled in this process (the cause is chained)."""


def _size(data: bytes, descriptor: Any) -> int:
    """Bytes moved by one message: the pickle plus what went through shared memory."""
    if descriptor is None:
        return len(data)
    return len(data) + sum(int(span[1]) for span in descriptor[1])


def _rebuild(records: dict[int, tuple[Any, ...]] | None) -> dict[int, BaseException] | None:
    if not records:
        return None
    return {position: rebuild_error(record) for position, record in records.items()}
