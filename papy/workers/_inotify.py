"""Linux inotify through ctypes: what ``load_file(follow=True)`` needs to sleep until a
followed file changes, instead of looking at it every ``wait`` seconds.

    kernel --(events)--> Inotify.fileno() --select()--> the reader's thread
                                                         read_events(): drained, then the
                                                         reader looks at the file again

Why ctypes and not a library: the job is three system calls (``inotify_init1``,
``inotify_add_watch``, ``inotify_rm_watch``) and a non-blocking ``os.read`` of the event
records. ``inotify_simple`` is itself a thin ctypes wrapper of the same calls, so it would
add a dependency without doing the job better; ``watchdog`` and ``watchfiles`` deliver
events through an observer thread of their own (watchfiles also debounces them), which adds
latency and a thread, and gives no descriptor to wait on together with the pipeline's stop
(see ``_follow.StopPipe``). The reader only needs to know *that* something changed: it then
looks at the file itself (``_follow.Followed.change``), so the events are drained, counted
and otherwise not interpreted, and a lost event queue (``IN_Q_OVERFLOW``) is just one more
wake-up.

Everything here raises ``OSError`` where inotify is not available (not Linux, a libc
without the calls, the per-user limit of inotify instances or watches reached): the caller
then falls back to polling.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
from typing import NamedTuple

__all__ = ["FILE_EVENTS", "FOLDER_EVENTS", "Event", "Inotify", "watchable_by_kernel"]

# <sys/inotify.h>
IN_MODIFY = 0x00000002          # written, truncated
IN_ATTRIB = 0x00000004          # metadata (also the link count: the file deleted)
IN_MOVED_FROM = 0x00000040      # (folder) an entry renamed away
IN_MOVED_TO = 0x00000080        # (folder) an entry renamed in
IN_CREATE = 0x00000100          # (folder) an entry created
IN_DELETE = 0x00000200          # (folder) an entry deleted
IN_DELETE_SELF = 0x00000400     # the watched file or folder deleted
IN_MOVE_SELF = 0x00000800       # the watched file or folder renamed
IN_Q_OVERFLOW = 0x00004000      # the kernel's queue overflowed: events were lost
IN_IGNORED = 0x00008000         # a watch was removed
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

FILE_EVENTS = IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF
FOLDER_EVENTS = (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF
                 | IN_MOVE_SELF | IN_ONLYDIR)

_HEADER = struct.Struct("iIII")     # wd, mask, cookie, len; then len bytes of name
_READ_SIZE = 64 * 1024

# statfs f_type of file systems whose changes inotify does not (fully) report: writes made
# by another machine (network file systems), by a FUSE daemon, or generated (proc, sysfs).
# GNU tail polls on these too.
_UNWATCHABLE_FS = frozenset({
    0x6969,         # NFS
    0x517B,         # SMB
    0xFE534D42,     # SMB2
    0xFF534D42,     # CIFS
    0x65735546,     # FUSE (sshfs, s3fs, gcsfuse, ...)
    0x01021997,     # 9P (WSL, virtfs)
    0x5346414F,     # AFS
    0x6B414653,     # kAFS
    0x00C36400,     # Ceph
    0x73757245,     # Coda
    0x01161970,     # GFS2
    0x7461636F,     # OCFS2
    0x0BD00BD0,     # Lustre
    0x786F4256,     # VirtualBox shared folders
    0x9FA0,         # proc
    0x62656572,     # sysfs
})


class Event(NamedTuple):
    wd: int
    mask: int
    name: bytes


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    """This process's C library (its symbols are the program's), with errno kept."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError as exc:          # no dynamic loader symbols at all
        raise OSError(errno.ENOSYS, f"inotify: no C library: {exc}") from exc


def _function(name: str) -> ctypes._NamedFuncPointer:
    try:
        function: ctypes._NamedFuncPointer = getattr(_libc(), name)
    except AttributeError:
        raise OSError(errno.ENOSYS, f"inotify: the C library has no {name}") from None
    return function


def _raise_errno(call: str, target: str = "") -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{call}: {os.strerror(code)}", target or None)


class Inotify:
    """One inotify instance: a descriptor to ``select()`` on, watches, drained events.

    Example (Linux)::

        watcher = Inotify()
        watcher.add_watch('/var/log/syslog', FILE_EVENTS)
        select.select([watcher], [], [])        # until the file changes
        watcher.read_events()                   # drained; look at the file now
        watcher.close()
    """

    def __init__(self) -> None:
        init1 = _function("inotify_init1")
        self._add = _function("inotify_add_watch")
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._remove = _function("inotify_rm_watch")
        self._remove.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            _raise_errno("inotify_init1")
        self._fd: int | None = fd

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("inotify: closed")
        return self._fd

    def add_watch(self, path: str | bytes, mask: int) -> int:
        """Watch ``path`` (a symbolic link is followed: ``/proc/self/fd/N`` watches the
        file that descriptor N has open); the watch descriptor."""
        wd = self._add(self.fileno(), os.fsencode(path), mask)
        if wd < 0:
            _raise_errno("inotify_add_watch", os.fsdecode(path))
        return int(wd)

    def remove_watch(self, wd: int) -> None:
        """Stop watching; a watch the kernel already removed (file gone) is no error."""
        if self._remove(self.fileno(), wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            _raise_errno("inotify_rm_watch")

    def read_events(self) -> list[Event]:
        """Every event queued now (``[]`` if none); never blocks."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self.fileno(), _READ_SIZE)
            except BlockingIOError:
                return events
            if not data:
                return events
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, size = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                name = data[offset:offset + size].rstrip(b"\0")
                offset += size
                events.append(Event(wd, mask, name))

    def close(self) -> None:
        """Close the descriptor (which removes every watch). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def watchable_by_kernel(fd: int) -> bool:
    """False when the file open as ``fd`` is on a file system where inotify misses changes
    (NFS, SMB, FUSE, ... see _UNWATCHABLE_FS); True otherwise, also when it cannot tell."""
    buffer = ctypes.create_string_buffer(256)   # struct statfs is 120 bytes on 64-bit Linux
    try:
        fstatfs = _function("fstatfs")
    except OSError:
        return True
    if fstatfs(fd, buffer) != 0:
        return True
    fs_type = ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF  # f_type comes first
    return fs_type not in _UNWATCHABLE_FS
