"""The janitor of papy.workers.transfer: removes dumped items nobody loaded in time.

    add(key, deadline, exists, remove)   any thread (dump_item)    --+
    discard(key)                         any thread (load_item)    --+--> _pending, under _lock
    remove_all()                         the process's finaliser   --+
    _sweep: the janitor thread, started by add() when none runs; it waits on _changed for
            the next deadline (at most SWEEP_SECONDS), forgets what another process loaded
            (exists() is false), calls remove() of what is due, and ends when nothing is
            pending.

One janitor per process (:func:`janitor`; a forked child starts with a new, empty one: it
owns none of its parent's items). At exit (a multiprocessing finaliser, which also runs in
pool workers stopped by their IMap), everything still pending is removed.
"""
from __future__ import annotations

import logging
import multiprocessing.util
import os
import threading
import time
from typing import Callable, NamedTuple

import posix_ipc

from imap import unlink_shm   # imap's one shm-unlink helper

__all__ = ["Janitor", "janitor", "SWEEP_SECONDS", "unlink", "unlink_shm", "shm_exists"]

log = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0            #: how often the janitor looks for items loaded elsewhere


class _Pending(NamedTuple):
    deadline: float | None          #: time.monotonic() when it is due, None: only at exit
    exists: Callable[[], bool]      #: False once another process loaded it
    remove: Callable[[], None]      #: removes what holds the item


class Janitor:
    """Removes what nobody loaded in time, and everything at exit; one per process.

    ``add`` and ``discard`` (any thread) change ``_pending`` under ``_lock``; the sweeper
    thread, started by ``add`` when none runs, waits on ``_changed`` for the next deadline
    (at most SWEEP_SECONDS), drops what is gone, removes what is due, and ends when
    nothing is pending.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[str, _Pending] = {}
        self._sweeping = False
        self._finaliser: multiprocessing.util.Finalize | None = None

    def add(self, key: str, deadline: float | None, exists: Callable[[], bool],
            remove: Callable[[], None]) -> None:
        """Remove ``key``'s item by calling ``remove`` at ``deadline`` (time.monotonic()),
        unless it is discarded or ``exists()`` turns false first."""
        with self._lock:
            self._pending[key] = _Pending(deadline, exists, remove)
            if self._finaliser is None:
                self._finaliser = multiprocessing.util.Finalize(
                    None, _remove_all_at_exit, exitpriority=10)
            if not self._sweeping:
                threading.Thread(target=self._sweep, name="papy-item-janitor",
                                 daemon=True).start()
                self._sweeping = True
            self._changed.notify()

    def discard(self, key: str) -> None:
        """Forget ``key``: its item was loaded (or is being written) in this process."""
        with self._lock:
            if self._pending.pop(key, None) is not None:
                self._changed.notify()

    def remove_all(self) -> None:
        """Remove every pending item now (at exit)."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
            self._changed.notify()
        for entry in pending:
            _quietly(entry.remove)

    def _sweep(self) -> None:
        while True:
            with self._lock:
                due = self._wait_for_due()
                if due is None:
                    self._sweeping = False
                    return
            for remove in due:
                _quietly(remove)

    def _wait_for_due(self) -> list[Callable[[], None]] | None:
        """The removers of the items whose deadline passed; None when nothing is pending."""
        while True:
            for key in [key for key, entry in self._pending.items() if not entry.exists()]:
                del self._pending[key]  # loaded by another process
            if not self._pending:
                return None
            now = time.monotonic()
            due = [key for key, entry in self._pending.items()
                   if entry.deadline is not None and entry.deadline <= now]
            if due:
                return [self._pending.pop(key).remove for key in due]
            waits = [entry.deadline - now for entry in self._pending.values()
                     if entry.deadline is not None]
            self._changed.wait(min([SWEEP_SECONDS, *waits]))


def _quietly(remove: Callable[[], None]) -> None:
    try:
        remove()
    except Exception:  # logged; one failure must not stop the others
        log.exception("could not remove a dumped item")


def unlink(path: str) -> None:
    """Remove a file or FIFO that may be gone already."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def shm_exists(name: str) -> bool:
    try:
        posix_ipc.SharedMemory(name, read_only=True).close_fd()
    except posix_ipc.ExistentialError:
        return False
    return True


_JANITOR = Janitor()


def janitor() -> Janitor:
    """This process's janitor (looked up at each call: a forked child gets a new one)."""
    return _JANITOR


def _remove_all_at_exit() -> None:
    _JANITOR.remove_all()


def _new_janitor() -> None:
    global _JANITOR
    _JANITOR = Janitor()  # a forked child owns none of its parent's items


os.register_at_fork(after_in_child=_new_janitor)
