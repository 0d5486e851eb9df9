"""imap's fork server: worker processes forked from a copy of the program made while it had
a single thread (the parent's side; the fork server's own loop is in ``_forkserver_loop.py``).

    parent, slot thread (ForkServer.spawn, one at a time)      fork server (one thread)
    socketpair for the worker, progress memfd, status pipe
    -- request: setup pickle + those 3 fds ------------------>  fork(): the child becomes
                                                                the worker (become_worker)
    <-- reply: the child's pid + a pidfd of it ---------------  its pidfd goes in the selector
    ServedProcess.sentinel: the status pipe  <-- exit code ---  the child exited: waitpid,
                                                                write its exit code, close
    (the status pipe ends without a code: the fork server died)
    control socket closed (the parent is gone)  ------------->  the fork server exits

Why: multiprocessing's forkserver starts a fresh interpreter, which costs 60-100 ms before
the first worker (more with preloaded modules), and each of its workers imports the main
script again. This fork server is a copy of the program made with ``os.fork()`` when its
first process pool starts, *while the program still has one thread*: it keeps what the
forkserver is for (no worker is ever forked from a process with threads, whose locks may be
held by a thread that does not exist in the child; a worker's malloc arena is its main
thread's) and starts workers as fast as ``fork``. Workers find every module the program had
imported, ``__main__`` included, so nothing is imported again.

What a worker inherits: the program's memory at the moment the fork server was made (copy on
write), stdin redirected from /dev/null, stdout and stderr, and no other file descriptor
(a pipe or socket the program closes later is never held open by the fork server). Every
request carries the parent's current ``sys.path`` and working directory.

When a program has more than one thread when its first process pool starts (threads of its
own, a library's thread pool), cannot fork, or the fork server died, workers start with
multiprocessing's forkserver instead (slower starts; a warning says so when it died).

Life and death: the fork server dies with the thread that forked it, the program's main
thread (PR_SET_PDEATHSIG), and exits when its control socket ends; each worker dies with
the fork server (PR_SET_PDEATHSIG, set by the worker). A parent killed with SIGKILL thus
takes the fork server and every worker with it. Ctrl-C reaches only the parent.
"""
from __future__ import annotations

import atexit
import logging
import mmap
import os
import pickle
import signal
import socket
import sys
import threading
from typing import Any

from ._forkserver_loop import CODE, PID, run_server
from ._prctl import die_with_parent

__all__ = ["ForkServer", "ForkServerGoneError", "ServedProcess", "can_fork_a_server",
           "die_with_parent", "prepare", "server", "server_pid", "start_worker"]

log = logging.getLogger(__name__)

#: how long ServedProcess waits for a worker to be gone after its fork server died
GONE_GRACE = 2.0


class ForkServerGoneError(Exception):
    """The fork server died (or was never there): start workers another way."""


def _threads_of_this_process() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def can_fork_a_server() -> bool:
    """True where forking the program now is safe: Linux, one thread (no Python thread and no
    thread of a C library), the main thread, and pidfds (Linux 5.3)."""
    return (sys.platform.startswith("linux") and hasattr(os, "pidfd_open")
            and hasattr(signal, "pidfd_send_signal") and hasattr(socket, "send_fds")
            and threading.current_thread() is threading.main_thread()
            and threading.active_count() == 1 and _threads_of_this_process() == 1)


# -- the parent's side ------------------------------------------------------------------

class ForkServer:
    """The parent's handle on its fork server: one request at a time, from any thread."""

    def __init__(self, pid: int, control: socket.socket):
        self.pid = pid
        self._control = control
        self._lock = threading.Lock()
        self.alive = True

    def spawn(self, fds: list[int], setup: bytes) -> tuple[int, int]:
        """Fork a worker that gets ``fds`` (its connection, its progress memfd, the write
        end of its status pipe) and ``setup``; returns ``(pid, pidfd)``.

        Raises ForkServerGoneError when the fork server is dead, OSError when it cannot fork.
        """
        with self._lock:
            if not self.alive:
                raise ForkServerGoneError("the fork server is gone")
            try:
                socket.send_fds(self._control, [setup], fds)
                reply, received, _, _ = socket.recv_fds(self._control, PID.size, 1)
            except OSError as exc:
                self._lost()
                raise ForkServerGoneError(f"the fork server is gone ({exc})") from None
            if len(reply) != PID.size:
                for fd in received:
                    os.close(fd)
                self._lost()
                raise ForkServerGoneError("the fork server is gone (it closed its socket)")
        (pid,) = PID.unpack(reply)
        if pid < 0:
            raise OSError(-pid, f"the fork server cannot fork: {os.strerror(-pid)}")
        return pid, received[0]

    def _lost(self) -> None:
        self.alive = False
        try:
            self._control.close()
        except OSError:
            pass
        try:
            os.waitpid(self.pid, os.WNOHANG)   # reap it (it is our child)
        except ChildProcessError:
            pass


_server: ForkServer | None = None
_server_owner: int | None = None     # the pid that made it: a forked child has none
_server_lock = threading.Lock()


@atexit.register
def _close_server() -> None:
    """At exit (after the IMaps are stopped: this module registers first, so it runs last):
    close the control socket; the fork server sees it end and exits."""
    current = server()
    if current is not None:
        with current._lock:
            current.alive = False
            current._control.close()


def server() -> ForkServer | None:
    """This process's live fork server, or None."""
    if _server is None or _server_owner != os.getpid() or not _server.alive:
        return None
    return _server


def server_pid() -> int | None:
    """The pid of this process's fork server (tests tell it from leftover children)."""
    current = server()
    return current.pid if current is not None else None


def prepare() -> ForkServer | None:
    """Make the fork server now if there is none and the program can be forked safely.

    Called when a process pool is made or started, in the thread that does it (before the
    pool's own threads exist). Returns the fork server or None (use multiprocessing's).
    """
    global _server, _server_owner, _server_lock
    with _server_lock:
        if _server is not None and _server_owner == os.getpid():
            return _server if _server.alive else None   # a dead one is not made again
        _import_preloads()
        if not can_fork_a_server():
            return None
        parent_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            parent_end.close()
            server_end.close()
            log.debug("cannot fork the fork server: %s", exc)
            return None
        if pid == 0:   # the fork server: never returns
            _server_lock = threading.Lock()     # held here, by the thread that forked it
            run_server(server_end.detach(), parent)
        server_end.close()
        _server, _server_owner = ForkServer(pid, parent_end), parent
        return _server


def _import_preloads() -> None:
    """Import what workers need (dill, imap's worker code) and what ``imap.preload`` names
    here, before the fork server is made, so that no worker imports them again (the program
    needs dill too, to ship functions)."""
    import importlib

    from .._config import PRELOAD
    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            log.debug("imap.preload: cannot import %s: %s", module, exc)


# -- the fork server ----------------------------------------------------------------------

class ServedProcess:
    """A worker forked by the fork server: what ProcessHandle uses of a multiprocessing
    Process (pid, sentinel, exitcode, join, kill, close).

    ``sentinel`` (the status pipe) becomes readable when the worker exited (with its exit
    code) or when the fork server died (no code: ``lost_with_server`` is then True, and the
    worker, killed by PR_SET_PDEATHSIG, is waited for on its pidfd).
    """

    def __init__(self, pid: int, pidfd: int, status: int):
        self.pid = pid
        self.sentinel = status
        self._pidfd = pidfd
        self._exitcode: int | None = None
        self.lost_with_server = False

    @property
    def exitcode(self) -> int | None:
        self.join(0)
        return self._exitcode

    def join(self, timeout: float | None = None) -> None:
        if self._exitcode is not None or self.lost_with_server or self.sentinel < 0:
            return
        from multiprocessing.connection import wait
        if not wait([self.sentinel], timeout):
            return
        data = b""
        try:
            data = os.read(self.sentinel, CODE.size)
        except OSError:
            pass
        if len(data) == CODE.size:
            (self._exitcode,) = CODE.unpack(data)
            return
        self.lost_with_server = True       # the fork server died before reporting
        if self._pidfd >= 0:
            wait([self._pidfd], GONE_GRACE)

    def kill(self) -> None:
        if self._pidfd >= 0 and self._exitcode is None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except (ProcessLookupError, OSError):
                pass

    def close(self) -> None:
        for fd in (self.sentinel, self._pidfd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.sentinel = self._pidfd = -1


def start_worker(fork_server: ForkServer, connection: int, worker_args: tuple[Any, ...]
                 ) -> tuple[ServedProcess, memoryview, mmap.mmap]:
    """Start a worker through ``fork_server``: returns the process, its progress array (two
    int64: the position of the item being evaluated and the time it started) and the map
    behind it. ``connection`` (the worker's end of its socket pair) is closed here."""
    progress_fd = os.memfd_create("imap-progress", os.MFD_CLOEXEC)
    status_read, status_write = os.pipe()
    try:
        os.ftruncate(progress_fd, 16)
        progress_map = mmap.mmap(progress_fd, 16)
        setup = pickle.dumps((list(sys.path), os.getcwd(), worker_args), 5)
        try:
            pid, pidfd = fork_server.spawn([connection, progress_fd, status_write], setup)
        except BaseException:
            os.close(status_read)
            progress_map.close()
            raise
    finally:
        for fd in (progress_fd, status_write, connection):
            os.close(fd)
    return ServedProcess(pid, pidfd, status_read), memoryview(progress_map).cast("q"), \
        progress_map
