"""The fork server's own process: its loop, and the child it forks becoming a worker.

The parent's side (the request, ``ServedProcess``, when the fork server is made) and the
diagram are in ``_forkserver.py``. Everything here runs in the fork server or in a worker
just forked from it, never in the program.
"""
from __future__ import annotations

import gc
import mmap
import os
import pickle
import selectors
import signal
import socket
import struct
import sys

from ._prctl import PR_SET_NAME, die_with_parent, prctl
from ._process_worker import worker_main

PID = struct.Struct("q")
CODE = struct.Struct("i")
#: the fork server's name in ps and /proc/<pid>/comm (at most 15 bytes)
SERVER_NAME = b"imap-forkserver"
WORKER_NAME = b"imap-worker"


def _only_fds(keep: set[int]) -> None:
    """Close every file descriptor above 2 except ``keep``."""
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _quiet_signals() -> None:
    """Handlers as in a fresh process, except SIGINT, which is ignored (Ctrl-C is the
    parent's to handle: it stops the pool)."""
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    for signum in signal.valid_signals():
        try:
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError, TypeError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _forget_inherited_helpers() -> None:
    """What multiprocessing knows of the parent is the parent's: its children (never to be
    joined or terminated from here), its exit finalizers (never to run here), its helpers
    (fork server, resource tracker: their descriptors are closed here; a worker that needs
    them starts its own)."""
    from multiprocessing import process, util
    # private multiprocessing state, not in the stubs: hence the ignores
    process._children.clear()            # type: ignore[attr-defined]
    util._finalizer_registry.clear()     # type: ignore[attr-defined]
    forkserver = sys.modules.get("multiprocessing.forkserver")
    if forkserver is not None:
        state = forkserver._forkserver
        state._forkserver_alive_fd = state._forkserver_pid = None
        state._forkserver_address = None
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    if tracker is not None:
        tracker._resource_tracker._fd = None
        tracker._resource_tracker._pid = None


def run_server(control_fd: int, parent: int) -> None:
    """The fork server's loop. Exits (os._exit, no clean-up of the copied program) when the
    parent is gone."""
    code = 0
    try:
        die_with_parent(parent)
        prctl(PR_SET_NAME, SERVER_NAME)
        gc.freeze()      # objects copied from the program are never collected here (their
        #                 finalizers would close descriptor numbers reused by ours)
        _only_fds({control_fd})
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        _quiet_signals()
        _forget_inherited_helpers()
        _serve(socket.socket(fileno=control_fd))
    except BaseException:  # noqa: BLE001 - nothing to report to: the parent is gone
        code = 1
    finally:
        os._exit(code)


def _serve(control: socket.socket) -> None:
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    children: dict[int, tuple[int, int]] = {}     # pidfd -> (pid, status write end)
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                try:
                    setup, fds, _, _ = socket.recv_fds(control, 1 << 20, 3)
                except OSError:
                    return
                if not setup:
                    return                          # the parent is gone
                _fork_worker(control, selector, children, setup, fds)
            else:
                pidfd = key.fd
                selector.unregister(pidfd)
                pid, status = children.pop(pidfd)
                os.close(pidfd)
                try:
                    _, wait_status = os.waitpid(pid, 0)
                    code = os.waitstatus_to_exitcode(wait_status)
                except ChildProcessError:
                    code = 255
                try:
                    os.write(status, CODE.pack(code))
                except OSError:
                    pass
                os.close(status)


def _fork_worker(control: socket.socket, selector: selectors.BaseSelector,
                 children: dict[int, tuple[int, int]], setup: bytes, fds: list[int]) -> None:
    connection, progress, status = fds
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        control.send(PID.pack(-(exc.errno or 1)))
        return
    if pid == 0:
        become_worker(setup, connection, progress, os.getppid())
    os.close(connection)
    os.close(progress)
    pidfd = os.pidfd_open(pid)
    children[pidfd] = (pid, status)
    selector.register(pidfd, selectors.EVENT_READ)
    socket.send_fds(control, [PID.pack(pid)], [pidfd])


def become_worker(setup: bytes, connection: int, progress: int, server_pid: int) -> None:
    """In the forked child: keep only its own descriptors, then run the worker loop."""
    code = 0
    try:
        _only_fds({connection, progress})
        die_with_parent(server_pid)
        prctl(PR_SET_NAME, WORKER_NAME)
        sys_path, cwd, worker_args = pickle.loads(setup)
        sys.path[:] = sys_path
        try:
            os.chdir(cwd)
        except OSError:
            pass
        from multiprocessing import util
        from multiprocessing.connection import Connection
        # as in a child that multiprocessing forks: its after-fork hooks first, its exit
        # finalizers (papy's transfer janitor, for one) when the worker ends
        util._run_after_forkers()            # type: ignore[attr-defined]  # private, no stub
        progress_map = mmap.mmap(progress, 16)
        os.close(progress)
        try:
            worker_main(Connection(connection), progress_map, *worker_args)
        finally:
            util._exit_function()            # type: ignore[attr-defined]  # private, no stub
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - shown on the worker's stderr, then exit 1
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(code)


# -- a worker started by the fork server, seen from the parent -----------------------------
