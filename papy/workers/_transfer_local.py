"""The places of papy.workers.transfer on one host: a file, a shared-memory segment, a FIFO.

    dumping process                                    loading process
    file  a private temp file (mode 0600)              read it, unlink it
    shm   a POSIX shared-memory segment                read it, unlink it
          /papy_<pid>_<random> (posix_ipc, 0600)
    fifo  a named pipe (0600) and a writer thread,     open it (the writer then unlinks
          blocked until a loader opens the pipe        it), read up to the end

Each dump registers its item with the process's janitor (_transfer_janitor.py), which
removes it when nobody loaded it in time or at exit; a load in this process discards it
there. The fifo writer's state (WAITING -> WRITING, or WAITING -> EXPIRED by the janitor)
changes under its lock, so a loader and the janitor never both win.
"""
from __future__ import annotations

import enum
import io
import logging
import os
import secrets
import select
import tempfile
import threading

import posix_ipc

from ._transfer_item import CHUNK, SHM_PREFIX, ItemRef, Payload, TransferError, gone, path_of
from ._transfer_janitor import janitor, shm_exists, unlink, unlink_shm

__all__ = ["dump_file", "load_file", "dump_shm", "load_shm", "dump_fifo", "load_fifo"]

log = logging.getLogger(__name__)


# -- file and shm -----------------------------------------------------------------------

def dump_file(payload: Payload, deadline: float | None, directory: str | None, prefix: str,
              suffix: str) -> str:
    """Write ``payload`` to a new private temp file; its path."""
    fd, path = tempfile.mkstemp(suffix, prefix, directory)
    try:
        with open(fd, "wb") as handle:
            handle.write(payload)
    except BaseException:
        unlink(path)
        raise
    janitor().add(path, deadline, lambda: os.path.exists(path), lambda: unlink(path))
    return path


def load_file(ref: ItemRef, remove: bool) -> bytes:
    path = path_of(ref)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise gone(ref, "no such file") from None
    if remove:
        unlink(path)
        janitor().discard(path)
    return data


def dump_shm(payload: Payload, deadline: float | None) -> str:
    """Write ``payload`` to a new shared-memory segment; its name."""
    name = f"{SHM_PREFIX}{os.getpid()}_{secrets.token_hex(8)}"
    segment = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600)
    try:  # write(2), not mmap: a full /dev/shm is then an OSError, not a SIGBUS
        with open(segment.fd, "wb", closefd=False) as handle:
            handle.write(payload)
    except BaseException:
        segment.unlink()
        raise
    finally:
        segment.close_fd()
    janitor().add(name, deadline, lambda: shm_exists(name), lambda: unlink_shm(name))
    return name


def load_shm(ref: ItemRef, remove: bool) -> bytes:
    name = path_of(ref)
    try:
        segment = posix_ipc.SharedMemory(name, read_only=True)
    except posix_ipc.ExistentialError:
        raise gone(ref, "no such shared-memory segment") from None
    try:
        with open(segment.fd, "rb", closefd=False) as handle:
            data = handle.read()
    finally:
        segment.close_fd()
    if remove:
        unlink_shm(name)
        janitor().discard(name)
    if len(data) != ref.size:
        raise TransferError(f"shm item {name!r}: {len(data)} bytes instead of "
                            f"{ref.size}; was the segment changed by someone else?")
    return data


# -- fifo -------------------------------------------------------------------------------

def dump_fifo(payload: Payload, deadline: float | None, directory: str | None, prefix: str,
              suffix: str) -> str:
    """Make a FIFO and a thread that writes ``payload`` to its first loader; its path."""
    folder = os.path.abspath(directory or tempfile.gettempdir())
    while True:
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            os.mkfifo(path, 0o600)
            break
        except FileExistsError:
            continue
    writer = _FifoWriter(path, bytes(payload))  # the caller may change a bytearray
    janitor().add(path, deadline, lambda: os.path.exists(path), writer.expire)
    try:
        threading.Thread(target=writer.serve, name=f"papy-item-fifo-{os.path.basename(path)}",
                         daemon=True).start()
    except BaseException:
        writer.expire()
        raise
    return path


class _FifoState(enum.Enum):
    """WAITING -> WRITING (a loader opened the FIFO) or WAITING -> EXPIRED (the janitor)."""
    WAITING = "waiting"
    WRITING = "writing"
    EXPIRED = "expired"


class _FifoWriter:
    """Writes one item into a FIFO for the first loader; its state changes under _lock."""

    def __init__(self, path: str, payload: bytes) -> None:
        self.path = path
        self.payload: bytes | None = payload
        self._lock = threading.Lock()
        self._state = _FifoState.WAITING

    def serve(self) -> None:
        """The writer thread: wait for a loader, write the payload, end."""
        try:
            try:
                fd = os.open(self.path, os.O_WRONLY)  # blocks until a loader opens the FIFO
            except OSError:
                return  # expired: the janitor removed the FIFO
            try:
                with self._lock:
                    if self._state is _FifoState.EXPIRED:
                        return
                    self._state = _FifoState.WRITING
                unlink(self.path)  # the loader holds it open; nobody else may open it
                view = memoryview(self.payload or b"").cast("B")
                while view:
                    view = view[os.write(fd, view[:CHUNK]):]
            except OSError as exc:
                log.warning("fifo item %s: the loader went away before the end (%s)",
                            self.path, exc)
            finally:
                os.close(fd)
        finally:
            self.payload = None
            janitor().discard(self.path)

    def expire(self) -> None:
        """The janitor's remover: release a writer blocked in open() and unlink the FIFO."""
        with self._lock:
            if self._state is not _FifoState.WAITING:
                return
            self._state = _FifoState.EXPIRED
        fd: int | None
        try:  # opening the read end releases a writer blocked in open()
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            fd = None
        unlink(self.path)
        if fd is not None:
            os.close(fd)


def load_fifo(ref: ItemRef, timeout: float | None) -> bytearray:
    path = path_of(ref)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise gone(ref, "no such FIFO") from None
    with io.FileIO(fd, "rb") as pipe:
        poller = select.poll()
        poller.register(fd, select.POLLIN)  # no POLLHUP before a writer came (Linux)
        data, extra, got = bytearray(ref.size), bytearray(1), 0
        view = memoryview(data)
        while True:
            if not poller.poll(None if timeout is None else timeout * 1000):
                unlink(path)  # its writer is dead or stuck: do not leave it
                raise TransferError(f"fifo item {path!r}: no data for {timeout} s "
                                    f"after {got} of {ref.size} bytes; the process that "
                                    f"dumped it is gone or stuck")
            count = pipe.readinto(view[got:] if got < ref.size else extra)
            if count is None:
                continue
            if count == 0:
                break
            if got >= ref.size:
                raise TransferError(f"fifo item {path!r}: more than {ref.size} bytes")
            got += count
    if got != ref.size:
        raise gone(ref, f"{got} of {ref.size} bytes came through the FIFO")
    return data
