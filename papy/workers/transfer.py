"""Move an item outside the pool's channel: only a small descriptor travels the pipeline.

``dump_item([item], type=...)`` puts the item somewhere and returns an :class:`ItemRef`;
``load_item([ref])`` (in any process on the same host; for ``tcp`` any host that can reach
the address) gets the item back and removes what held it::

    dumping process                                    loading process
    file  a private temp file (mode 0600)              read it, unlink it
    shm   a POSIX shared-memory segment                read it, unlink it
          /papy_<pid>_<random> (posix_ipc, 0600)
    fifo  a named pipe (0600) and a writer thread,     open it (the writer then unlinks
          blocked until a loader opens the pipe        it), read up to the end
    tcp   a socket listening on 127.0.0.1 and a        connect, send the token, read
          server thread that serves one loader         up to the end

Items: ``bytes``, ``bytearray`` and ``memoryview`` travel as they are, ``str`` as UTF-8,
anything else as a pickle (protocol 5); ``load_item`` returns the same type (a memoryview
comes back as bytes).

Clean-up, whatever happens:

1. loaded: the loader removes the file or segment; the fifo writer and the tcp server
   end and remove the FIFO or close the socket;
2. not loaded within ``timeout`` seconds: the tcp server stops listening; the janitor
   removes the file, segment or FIFO (and releases the fifo writer). The janitor is one
   daemon thread per process, alive only while something waits to be loaded; it hears of
   loads in its own process at once, and of loads by other processes by checking once a
   second whether the file, segment or FIFO still exists;
3. the dumping process exits (a pool worker stopped by its IMap included): whatever it
   still holds is removed, by a multiprocessing finaliser (which also runs at exit of the
   main process). A process killed by SIGKILL cleans nothing; ``sweep_leftovers()``
   removes what dead processes left (names carry the pid: ``/dev/shm/papy_<pid>_*``,
   ``<tempdir>/papy_item_<pid>_*`` and ``papy_fifo_<pid>_*``).
"""
from __future__ import annotations

import enum
import hmac
import io
import logging
import multiprocessing.util
import os
import pickle
import re
import secrets
import select
import socket
import tempfile
import threading
import time
from typing import Any, Callable, NamedTuple

import posix_ipc

from imap import imports

__all__ = ["dump_item", "load_item", "sweep_leftovers", "ItemRef", "TransferError", "KINDS",
           "SHM_PREFIX", "DEFAULT_TIMEOUT"]

log = logging.getLogger(__name__)

KINDS = ("file", "fifo", "tcp", "shm")
SHM_PREFIX = "/papy_"          #: every segment is /papy_<pid>_<random>
DEFAULT_TIMEOUT = 300.0        #: seconds an item waits for its loader
LOAD_TIMEOUT = 60.0            #: seconds a fifo/tcp loader waits for the next bytes
SWEEP_SECONDS = 1.0            #: how often the janitor looks for items loaded elsewhere
_CHUNK = 1 << 20
_HANDSHAKE_SECONDS = 10.0      #: a tcp loader must send its token within this time


class ItemRef(NamedTuple):
    """What :func:`dump_item` returns and :func:`load_item` takes: small and picklable."""
    kind: str              #: 'file', 'fifo', 'tcp' or 'shm'
    location: Any          #: the file or FIFO path, the segment name, or (host, port)
    size: int              #: bytes of the encoded item
    encoding: str          #: 'bytes', 'bytearray', 'str' or 'pickle'
    expires: float | None  #: time.time() after which the item may be gone
    token: str = ""        #: tcp: the secret a loader must present


class TransferError(OSError):
    """An item cannot be loaded: already loaded, expired, or its dumping process is gone."""


@imports(["os", "socket", "tempfile", "threading", "posix_ipc"])
def dump_item(inbox, type: str = "file", timeout: float | None = DEFAULT_TIMEOUT,  # noqa: A002
              dir: str | None = None, prefix: str | None = None,  # noqa: A002
              suffix: str = "", host: str = "127.0.0.1") -> ItemRef:
    """Put the item (``inbox[0]``) in a file, fifo, tcp socket or shared-memory segment
    and return the :class:`ItemRef` that :func:`load_item` takes.

    ``timeout``: seconds after which an item nobody loaded is removed (None: only when
    loaded or when this process exits). ``dir``, ``prefix``, ``suffix``: where and how the
    file or FIFO is named (default: the temp directory, ``papy_item_<pid>_`` /
    ``papy_fifo_<pid>_``).
    ``host``: the address a ``tcp`` item listens on (loopback by default).

    >>> ref = dump_item([b'a large payload'], type='shm')
    >>> ref.kind, ref.size, load_item([ref])
    ('shm', 15, b'a large payload')
    """
    if type not in KINDS:
        raise ValueError(f"dump_item type must be one of {', '.join(map(repr, KINDS))}, "
                         f"not {type!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"dump_item timeout must be seconds > 0 or None, not {timeout!r}")
    payload, encoding = _encode(inbox[0])
    size = memoryview(payload).nbytes
    expires = None if timeout is None else time.time() + timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    if type == "file":
        location = _dump_file(payload, deadline, dir, prefix or f"papy_item_{os.getpid()}_",
                              suffix)
    elif type == "shm":
        location = _dump_shm(payload, deadline)
    elif type == "fifo":
        location = _dump_fifo(payload, deadline, dir, prefix or f"papy_fifo_{os.getpid()}_",
                              suffix)
    else:
        location, token = _dump_tcp(payload, deadline, host)
        return ItemRef(type, location, size, encoding, expires, token)
    return ItemRef(type, location, size, encoding, expires)


@imports(["os", "socket", "select", "posix_ipc"])
def load_item(inbox, remove: bool = True, timeout: float | None = LOAD_TIMEOUT) -> Any:
    """Return the item that :func:`dump_item` put where the descriptor ``inbox[0]`` says,
    and remove it (``remove=False`` keeps a ``file`` or ``shm`` item for other loaders
    until its timeout; ``fifo`` and ``tcp`` items can be loaded once only).

    ``timeout``: seconds a ``fifo`` or ``tcp`` loader waits for data before it gives up.
    Raises :class:`TransferError` when the item is gone (see its message for why).

    >>> load_item([dump_item(['text, or any picklable object'], type='file')])
    'text, or any picklable object'
    """
    ref = _as_ref(inbox[0])
    if not remove and ref.kind in ("fifo", "tcp"):
        raise ValueError(f"a {ref.kind} item can be loaded once only: remove=False works for "
                         f"'file' and 'shm' items")
    if ref.kind == "file":
        data = _load_file(ref, remove)
    elif ref.kind == "shm":
        data = _load_shm(ref, remove)
    elif ref.kind == "fifo":
        data = _load_fifo(ref, timeout)
    else:
        data = _load_tcp(ref, timeout)
    return _decode(data, ref.encoding)


@imports(["os", "re", "tempfile", "posix_ipc"])
def sweep_leftovers(directory: str | None = None) -> list:
    """Remove the items that processes which no longer exist dumped and nobody loaded
    (a process killed by SIGKILL cleans nothing up); return what was removed.

    Only default names are recognised: ``/dev/shm/papy_<pid>_*`` and, in ``directory``
    (the temp directory by default), ``papy_item_<pid>_*`` and ``papy_fifo_<pid>_*``.

    >>> removed = sweep_leftovers()    # e.g. after a pool worker was killed
    """
    temp = directory or tempfile.gettempdir()
    places = [("/dev/shm", re.compile(r"papy_(\d+)_[0-9a-f]+$"),
               lambda name: _unlink_shm("/" + name)),
              (temp, re.compile(r"papy_(?:item|fifo)_(\d+)_"),
               lambda name: _unlink(os.path.join(temp, name)))]
    removed = []
    for folder, pattern, remove in places:
        for name in _listdir(folder):
            match = pattern.match(name)
            if match is None or os.path.exists(f"/proc/{match.group(1)}"):
                continue  # not ours, or its process still runs (and its janitor with it)
            remove(name)
            removed.append(os.path.join(folder, name))
    return removed


def _listdir(folder: str) -> list:
    try:
        return os.listdir(folder)
    except OSError:
        return []


# -- encoding ---------------------------------------------------------------------------

def _encode(item) -> tuple:
    if isinstance(item, (bytes, bytearray)):
        return item, type(item).__name__
    if isinstance(item, memoryview):
        return (item.cast("B") if item.c_contiguous else item.tobytes()), "bytes"
    if isinstance(item, str):
        return item.encode("utf-8", "surrogatepass"), "str"
    try:
        return pickle.dumps(item, 5), "pickle"
    except Exception as exc:
        raise TypeError(f"dump_item cannot pickle the item ({type(item).__name__}): {exc}; "
                        f"dump bytes, str or a picklable object") from exc


def _decode(data, encoding: str) -> Any:
    if encoding == "bytes":
        return bytes(data)
    if encoding == "bytearray":
        return data if isinstance(data, bytearray) else bytearray(data)
    if encoding == "str":
        return data.decode("utf-8", "surrogatepass")
    return pickle.loads(data)


def _as_ref(ref) -> ItemRef:
    if isinstance(ref, tuple) and len(ref) in (5, 6) and ref[0] in KINDS:
        return ItemRef(*ref)
    raise TypeError(f"load_item takes the descriptor that dump_item returned (an ItemRef) "
                    f"as inbox[0], not {ref!r:.200}")


def _gone(ref: ItemRef, what: str) -> TransferError:
    expired = ref.expires is not None and time.time() > ref.expires
    why = (f"it expired at {time.strftime('%H:%M:%S', time.localtime(ref.expires))} "
           f"(raise dump_item's timeout)" if expired else
           "it was loaded already (load an item once, or pass remove=False for file and "
           "shm items), or the process that dumped it has exited")
    return TransferError(f"the {ref.kind} item {ref.location!r} is gone ({what}): {why}")


# -- file and shm -----------------------------------------------------------------------

def _dump_file(payload, deadline, directory, prefix, suffix) -> str:
    fd, path = tempfile.mkstemp(suffix, prefix, directory)
    try:
        with open(fd, "wb") as handle:
            handle.write(payload)
    except BaseException:
        _unlink(path)
        raise
    _JANITOR.add(path, deadline, lambda: os.path.exists(path), lambda: _unlink(path))
    return path


def _load_file(ref: ItemRef, remove: bool) -> bytes:
    try:
        with open(ref.location, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise _gone(ref, "no such file") from None
    if remove:
        _unlink(ref.location)
        _JANITOR.discard(ref.location)
    return data


def _dump_shm(payload, deadline) -> str:
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
    _JANITOR.add(name, deadline, lambda: _shm_exists(name), lambda: _unlink_shm(name))
    return name


def _load_shm(ref: ItemRef, remove: bool) -> bytes:
    try:
        segment = posix_ipc.SharedMemory(ref.location, read_only=True)
    except posix_ipc.ExistentialError:
        raise _gone(ref, "no such shared-memory segment") from None
    try:
        with open(segment.fd, "rb", closefd=False) as handle:
            data = handle.read()
    finally:
        segment.close_fd()
    if remove:
        _unlink_shm(ref.location)
        _JANITOR.discard(ref.location)
    if len(data) != ref.size:
        raise TransferError(f"shm item {ref.location!r}: {len(data)} bytes instead of "
                            f"{ref.size}; was the segment changed by someone else?")
    return data


def _shm_exists(name: str) -> bool:
    try:
        posix_ipc.SharedMemory(name, read_only=True).close_fd()
    except posix_ipc.ExistentialError:
        return False
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _unlink_shm(name: str) -> None:
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        pass


# -- fifo -------------------------------------------------------------------------------

def _dump_fifo(payload, deadline, directory, prefix, suffix) -> str:
    directory = os.path.abspath(directory or tempfile.gettempdir())
    while True:
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            os.mkfifo(path, 0o600)
            break
        except FileExistsError:
            continue
    writer = _FifoWriter(path, bytes(payload))  # the caller may change a bytearray
    _JANITOR.add(path, deadline, lambda: os.path.exists(path), writer.expire)
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

    def __init__(self, path: str, payload):
        self.path, self.payload = path, payload
        self._lock = threading.Lock()
        self._state = _FifoState.WAITING

    def serve(self) -> None:
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
                _unlink(self.path)  # the loader holds it open; nobody else may open it
                view = memoryview(self.payload).cast("B")
                while view:
                    view = view[os.write(fd, view[:_CHUNK]):]
            except OSError as exc:
                log.warning("fifo item %s: the loader went away before the end (%s)",
                            self.path, exc)
            finally:
                os.close(fd)
        finally:
            self.payload = None
            _JANITOR.discard(self.path)

    def expire(self) -> None:
        with self._lock:
            if self._state is not _FifoState.WAITING:
                return
            self._state = _FifoState.EXPIRED
        try:  # opening the read end releases a writer blocked in open()
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            fd = None
        _unlink(self.path)
        if fd is not None:
            os.close(fd)


def _load_fifo(ref: ItemRef, timeout: float) -> bytearray:
    try:
        fd = os.open(ref.location, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise _gone(ref, "no such FIFO") from None
    with io.FileIO(fd, "rb") as pipe:
        poller = select.poll()
        poller.register(fd, select.POLLIN)  # no POLLHUP before a writer came (Linux)
        data, extra, got = bytearray(ref.size), bytearray(1), 0
        view = memoryview(data)
        while True:
            if not poller.poll(None if timeout is None else timeout * 1000):
                _unlink(ref.location)  # its writer is dead or stuck: do not leave it
                raise TransferError(f"fifo item {ref.location!r}: no data for {timeout} s "
                                    f"after {got} of {ref.size} bytes; the process that "
                                    f"dumped it is gone or stuck")
            count = pipe.readinto(view[got:] if got < ref.size else extra)
            if count is None:
                continue
            if count == 0:
                break
            if got >= ref.size:
                raise TransferError(f"fifo item {ref.location!r}: more than {ref.size} bytes")
            got += count
    if got != ref.size:
        raise _gone(ref, f"{got} of {ref.size} bytes came through the FIFO")
    return data


# -- tcp --------------------------------------------------------------------------------

def _dump_tcp(payload, deadline, host: str) -> tuple:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, 0), family=family)
    token = secrets.token_hex(16)
    port = listener.getsockname()[1]
    advertised = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    server = _TcpServer(listener, token.encode(), bytes(payload), deadline)
    try:
        threading.Thread(target=server.serve, name=f"papy-item-tcp-{port}", daemon=True).start()
    except BaseException:
        listener.close()
        raise
    return (advertised, port), token


class _TcpServer:
    """Serves one item to the first connection that presents the token, until a deadline."""

    def __init__(self, listener: socket.socket, token: bytes, payload, deadline):
        self.listener, self.token, self.payload, self.deadline = \
            listener, token, payload, deadline

    def serve(self) -> None:
        try:
            while True:
                remaining = None if self.deadline is None else self.deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return  # expired: nobody came
                self.listener.settimeout(remaining)
                try:
                    connection, peer = self.listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    if self._send(connection, peer):
                        return
        finally:
            self.listener.close()
            self.payload = None

    def _send(self, connection: socket.socket, peer) -> bool:
        """Send the item if the peer knows the token; True when the item is gone."""
        connection.settimeout(_HANDSHAKE_SECONDS)
        try:
            token = _receive(connection, len(self.token))
        except OSError:
            token = b""
        if not hmac.compare_digest(token, self.token):
            log.warning("tcp item: refused a connection from %s (wrong token)", peer)
            return False
        self.listener.close()  # taken: closed before the loader can see the end of it
        connection.settimeout(LOAD_TIMEOUT)
        try:
            view = memoryview(self.payload).cast("B")
            for start in range(0, len(view), _CHUNK):
                connection.sendall(view[start:start + _CHUNK])
            connection.shutdown(socket.SHUT_WR)
        except OSError as exc:
            log.warning("tcp item: sending to %s failed (%s)", peer, exc)
        return True


def _receive(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _load_tcp(ref: ItemRef, timeout: float) -> bytearray:
    try:
        connection = socket.create_connection(tuple(ref.location), timeout=timeout)
    except ConnectionRefusedError:
        raise _gone(ref, "nobody listens there") from None
    with connection:
        connection.sendall(ref.token.encode())
        data, got = bytearray(ref.size), 0
        view = memoryview(data)
        try:
            while got < ref.size:
                count = connection.recv_into(view[got:])
                if not count:
                    break
                got += count
            more = connection.recv(1)
        except TimeoutError:
            raise TransferError(f"tcp item {ref.location!r}: no data for {timeout} s after "
                                f"{got} of {ref.size} bytes") from None
    if got != ref.size or more:
        raise _gone(ref, f"{got}{'+' if more else ''} of {ref.size} bytes came through")
    return data


# -- the janitor ------------------------------------------------------------------------

class _Janitor:
    """Removes what nobody loaded in time, and everything at exit; one per process.

    ``add`` and ``discard`` (any thread) change ``_pending`` under ``_lock``; the sweeper
    thread, started by ``add`` when none runs, waits on ``_changed`` for the next deadline
    (at most SWEEP_SECONDS), drops what is gone, removes what is due, and ends when
    nothing is pending.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict = {}  # key -> (deadline or None, exists(), remove())
        self._sweeping = False
        self._finaliser = None

    def add(self, key: str, deadline, exists: Callable, remove: Callable) -> None:
        with self._lock:
            self._pending[key] = (deadline, exists, remove)
            if self._finaliser is None:
                self._finaliser = multiprocessing.util.Finalize(
                    None, _remove_all_at_exit, exitpriority=10)
            if not self._sweeping:
                threading.Thread(target=self._sweep, name="papy-item-janitor",
                                 daemon=True).start()
                self._sweeping = True
            self._changed.notify()

    def discard(self, key: str) -> None:
        with self._lock:
            if self._pending.pop(key, None) is not None:
                self._changed.notify()

    def remove_all(self) -> None:
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
            self._changed.notify()
        for _, _, remove in pending:
            _quietly(remove)

    def _sweep(self) -> None:
        while True:
            with self._lock:
                due = self._wait_for_due()
                if due is None:
                    self._sweeping = False
                    return
            for remove in due:
                _quietly(remove)

    def _wait_for_due(self):
        """The removers of the items whose deadline passed; None when nothing is pending."""
        while True:
            for key in [key for key, (_, exists, _) in self._pending.items() if not exists()]:
                del self._pending[key]  # loaded by another process
            if not self._pending:
                return None
            now = time.monotonic()
            due = [key for key, (deadline, _, _) in self._pending.items()
                   if deadline is not None and deadline <= now]
            if due:
                return [self._pending.pop(key)[2] for key in due]
            deadlines = [entry[0] for entry in self._pending.values() if entry[0] is not None]
            self._changed.wait(min([SWEEP_SECONDS] + [d - now for d in deadlines]))


def _quietly(remove: Callable) -> None:
    try:
        remove()
    except Exception:  # noqa: BLE001 - logged; one failure must not stop the others
        log.exception("could not remove a dumped item")


def _remove_all_at_exit() -> None:
    _JANITOR.remove_all()


def _new_janitor() -> None:
    global _JANITOR
    _JANITOR = _Janitor()  # a forked child owns none of its parent's items


_JANITOR = _Janitor()
os.register_at_fork(after_in_child=_new_janitor)
