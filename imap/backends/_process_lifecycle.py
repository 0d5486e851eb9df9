"""The life of a local worker process: how it starts, says it is ready, is closed and killed
(the parent's side; ``ProcessLifecycle`` is the base class of ``ProcessHandle`` in
``process.py``, which runs batches on it).

How workers start (``start_method``): 'forkserver' (the default) asks imap's fork server
(``_forkserver.py``: a copy of the program made while it had one thread; fast, nothing is
imported again), or multiprocessing's forkserver when the program had threads or the fork
server died; 'spawn' and 'fork' are multiprocessing's. A worker says 'hello' when it is
ready: one that dies before is a start failure, whose cause (exit code, signal, a missing
``__main__`` guard, a main module that cannot be imported again) ``open`` raises.

How they end: ``close`` sends 'exit', waits EXIT_GRACE seconds, then kills; ``kill`` (any
thread) kills at once and leaves the join to the slot thread's ``close``. Workers set
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
from typing import Any

from .._errors import BrokenPoolError, WorkerStartError, warn_safely
from .._evaluate import PROTOCOL
from . import _forkserver, _main_guard, _shm
from ._process_worker import HELLO, IDLE, ShmSettings, process_target
from .base import WorkerHandle

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


class ProcessLifecycle(WorkerHandle):
    """Start, close and kill a local worker process (the base class of ``ProcessHandle``)."""

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
