"""Remote workers: one RPyC classic connection per worker slot.

    slot thread --run(batch)--> RemoteHandle ==TCP (TLS)==> server process (rpyc_classic or
                                                            imap.server), one per connection
        1. first batch of a task: the dill payload, once per connection (cached by task key)
        2. pickle.dumps(items) as bytes, in calls of at most CHUNK bytes  -> _RemoteSide.run
        3. <- the reply bytes (values, error records, elapsed), in calls of at most CHUNK bytes
        <- heartbeats: while a call runs, the server's beat thread calls back every
           ``interval`` seconds (an asynchronous call, never waited for), or at once with
           the position of an item that ran past the task's item_timeout
    any thread --kill()--> shutdown(socket): the slot thread blocked in run() sees EOF
    server, forked per connection: the beat thread exits the process when the client
           hangs up mid-call (killed, timed out) or an item runs past its item_timeout

Who reads and writes what: only the slot thread sends calls and reads the socket (rpyc's
``serve``), and the heartbeat callback runs in that thread too, inside ``serve``. ``kill``
touches nothing but the socket (a shutdown, never a close, so the descriptor stays valid
for the reader). On the server, the connection's serving thread runs the calls and the beat
thread only sends.

The server side is the class ``_RemoteSide`` below: its source text (with the source of
``imap._evaluate``) is sent with ``conn.execute``, so a plain ``rpyc_classic`` server with
only rpyc and dill installed can serve IMap workers.

Life of a handle (``_State``, changed under ``_lock``):

    CLOSED --open()--> OPEN --WorkerLost--> BROKEN --close()/open()--> CLOSED/OPEN
    any state --kill()--> socket shut down (a running call ends as WorkerLost)

Shutdown order (close):
 1. the state becomes CLOSED under the lock; from then on kill() does nothing
 2. a healthy connection is closed politely with a short timeout (CLOSE_TIMEOUT);
    a broken or killed one has its socket closed first, so nothing waits on the server
"""
from __future__ import annotations

import enum
import errno
import functools
import inspect
import ipaddress
import logging
import os
import pickle
import socket
import sys
import threading
import time

import dill
import rpyc
from rpyc.core.channel import Channel
from rpyc.core.service import ClassicClient
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_channel

from .. import _evaluate
from .._errors import SerializationError, WorkerStartError, rebuild_error
from .base import Batch, TaskSpec, WorkerHandle, WorkerLost, describe

__all__ = ["RemoteHandle", "parse_worker_remote", "make_remote_handles", "DEFAULT_PORT",
           "DEFAULT_TIMEOUT"]

log = logging.getLogger(__name__)

#: the port of ``rpyc_classic`` and of ``python -m imap.server``
DEFAULT_PORT = 18812
#: seconds without any sign of life (a reply or a heartbeat) before a server counts as lost
DEFAULT_TIMEOUT = 30.0
#: longest wait for the TCP connection and for each request made by ``open()``
CONNECT_TIMEOUT = 10.0
#: how long ``close()`` waits for the server to acknowledge (rpyc's close is a request)
CLOSE_TIMEOUT = 1.0
#: the most bytes sent or received in one call
CHUNK = 1 << 20
PROTOCOL = 5

_ALLOWED = ("worker_remote takes a list of [host, n] or (host, n) pairs: host is 'name' or "
            f"'name:port' (default port {DEFAULT_PORT}; IPv6 as '[addr]:port') and n, the number "
            "of workers on that host, is a positive int; e.g. [('node1', 4), ('node2:18813', 2)]")
_TLS_KEYS = ("keyfile", "certfile", "cafile")


# -- arguments --------------------------------------------------------------------------

def parse_worker_remote(worker_remote) -> list[tuple[str, int, int]]:
    """Validate ``worker_remote``; return ``[(host, port, n), ...]``.

    >>> parse_worker_remote([('node1', 4), ['node2:18813', 2]])
    [('node1', 18812, 4), ('node2', 18813, 2)]

    Raises TypeError for a value of the wrong type and ValueError for a bad value, with a
    message saying what is allowed.
    """
    if worker_remote is None:
        return []
    if isinstance(worker_remote, (str, bytes, dict)) or not isinstance(worker_remote,
                                                                          (list, tuple)):
        raise TypeError(f"{_ALLOWED}; got {worker_remote!r}")
    specs = []
    for entry in worker_remote:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise TypeError(f"{_ALLOWED}; got the entry {entry!r}")
        address, count = entry
        if not isinstance(address, str):
            raise TypeError(f"{_ALLOWED}; got the host {address!r}")
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError(f"{_ALLOWED}; got n = {count!r} for {address!r}")
        if count < 1:
            raise ValueError(f"{_ALLOWED}; got n = {count} for {address!r}")
        host, port = _split_address(address)
        specs.append((host, port, count))
    return specs


def _split_address(address: str) -> tuple[str, int]:
    text = address.strip()
    host, port_text = text, None
    if text.startswith("["):                      # [IPv6] or [IPv6]:port
        end = text.find("]")
        host, rest = text[1:end], text[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            raise ValueError(f"{_ALLOWED}; got the host {address!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:                     # a bare IPv6 address
        _check_ipv6(text, address)
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"{_ALLOWED}; got the host {address!r}")
    if port_text is None:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{_ALLOWED}; the port must be 1..65535, got {address!r}")
    return host, int(port_text)


def _check_ipv6(text: str, address: str) -> None:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise ValueError(f"{_ALLOWED}; got the host {address!r}") from None


def _check_tls(tls) -> dict | None:
    if tls is None:
        return None
    if not isinstance(tls, dict):
        raise TypeError(f"remote_tls must be None or a dict(keyfile=..., certfile=..., "
                        f"cafile=...) for mutual TLS, not {type(tls).__name__}")
    unknown = sorted(set(tls) - set(_TLS_KEYS))
    missing = [key for key in _TLS_KEYS if not tls.get(key)]
    if unknown or missing:
        raise ValueError(f"remote_tls takes exactly keyfile (this client's private key), "
                         f"certfile (its certificate) and cafile (the CA that signed the "
                         f"servers' certificates); unknown: {unknown}, missing: {missing}")
    for key in _TLS_KEYS:
        if not os.path.isfile(tls[key]):
            raise ValueError(f"remote_tls[{key!r}]: no such file {tls[key]!r}")
    return {key: os.fspath(tls[key]) for key in _TLS_KEYS}


def make_remote_handles(specs, tls: dict | None = None,
                        timeout: float | None = None) -> list[RemoteHandle]:
    """One ``RemoteHandle`` per worker slot of ``specs``.

    ``specs`` is what :func:`parse_worker_remote` returns (or a raw ``worker_remote``
    value); ``tls`` is None or ``dict(keyfile=, certfile=, cafile=)``; ``timeout`` is the
    number of seconds without a sign of life after which a server counts as lost (None:
    ``DEFAULT_TIMEOUT``).
    """
    specs = list(specs or ())
    if not all(isinstance(s, tuple) and len(s) == 3 for s in specs):
        specs = parse_worker_remote(specs)
    tls = _check_tls(tls)
    handles, seen = [], {}
    for host, port, count in specs:
        for _ in range(count):
            seen[host, port] = seen.get((host, port), 0) + 1
            handles.append(RemoteHandle(host, port, seen[host, port], tls=tls,
                                        timeout=timeout))
    return handles


def local_versions() -> tuple[str, str, str]:
    """This interpreter's (Python minor, rpyc, dill) versions, compared with each server's."""
    return (f"{sys.version_info[0]}.{sys.version_info[1]}", rpyc.__version__, dill.__version__)


# -- the socket --------------------------------------------------------------------------

class _Stream(SocketStream):
    """rpyc's SocketStream, but a stall inside a message is an error, not an endless wait.

    The socket's timeout is the handle's timeout: a message that stops arriving halfway
    (a server stopped mid-reply) ends as EOFError. ``write`` slices a memoryview instead
    of copying the rest of the buffer for every 64 KB chunk.
    """

    __slots__ = ()

    def read(self, count):
        data = []
        while count > 0:
            try:
                buf = self.sock.recv(min(self.MAX_IO_CHUNK, count))
            except socket.timeout:
                self.close()
                raise EOFError("the server stopped sending in the middle of a message")
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    continue
                self.close()
                raise EOFError(exc) from exc
            if not buf:
                self.close()
                raise EOFError("connection closed by peer")
            data.append(buf)
            count -= len(buf)
        return b"".join(data)

    def write(self, data):
        view = memoryview(data)
        try:
            while view:
                view = view[self.sock.send(view[:self.MAX_IO_CHUNK]):]
        except OSError as exc:
            self.close()
            raise EOFError(exc) from exc


def _open_stream(host: str, port: int, tls: dict | None, timeout: float) -> _Stream:
    """Connect (and do the TLS handshake) within ``timeout``; the socket is closed on error.

    rpyc's own connect leaks the socket when the connection is refused, and its factories
    give no way to turn compression off or to bound the connect time.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][-1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.connect(address)
        if tls is not None:
            try:
                sock = _tls_context(tls).wrap_socket(sock, server_hostname=host)
            except OSError as exc:
                raise _HandshakeFailed(exc) from exc
        return _Stream(sock)
    except BaseException:
        sock.close()
        raise


class _HandshakeFailed(Exception):
    pass


def _tls_context(tls: dict):
    """Client side of mutual TLS: show our certificate, require one signed by the CA.

    Only the chain is checked, not the host name: any certificate of the private CA is
    accepted (so use a CA dedicated to one cluster).
    """
    import ssl
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls["cafile"])
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(tls["certfile"], keyfile=tls["keyfile"])
    return context


# -- the server side (its source is sent to the server) -----------------------------------

class _RemoteSide:
    """The other end of a RemoteHandle, living in the server process (one per connection).

    Self-contained: its methods import what they need (standard library, rpyc, dill), since
    the source text of this class is executed on a server where imap may not be installed.

    Threads: the connection's serving thread runs ``run`` (and the user's function); the
    beat thread only reads ``_busy``, ``_limit`` and ``_progress`` and sends asynchronous
    calls: ``beat()`` every ``interval`` s while a call runs, ``beat(position)`` when the
    item at ``position`` ran past its item_timeout.
    """

    def __init__(self, evaluate_source, beat, interval, chunk, server_conn):
        import os
        import pickle
        import rpyc
        import socket
        import threading
        import types
        module = types.ModuleType("imap_evaluate_shipped")
        exec(compile(evaluate_source, "imap/_evaluate.py (shipped)", "exec"), module.__dict__)
        self._evaluate = module
        self._pickle = pickle
        self._os = os
        self._functions = {}          # task key -> (call, None) or (None, error record)
        self._parts = {"payload": [], "data": []}
        self._pending = []            # reply chunks not fetched yet, last one first
        self._chunk = chunk
        self._busy = False
        self._limit = None            # item_timeout of the running call, in ns
        self._progress = [-1, 0]      # position in the batch being evaluated, its start (ns)
        self._wake_read, self._wake_write = os.pipe()   # wakes the beat thread
        self._conn = server_conn
        # served by the main thread: a process of its own (forking server), which may exit
        # when its client is gone; a threaded server's connection thread may not
        self._dedicated = threading.current_thread() is threading.main_thread()
        try:  # replies of ~1 MB: no zlib (18 MB/s) and no Nagle stalls
            server_conn._channel.compress = False
            server_conn._channel.stream.sock.setsockopt(socket.IPPROTO_TCP,
                                                        socket.TCP_NODELAY, 1)
        except Exception:  # noqa: BLE001 - an unusual stream: only slower
            pass
        self._beat = rpyc.async_(beat)
        threading.Thread(target=self._beat_loop, args=(interval,), daemon=True,
                         name="imap-heartbeat").start()

    def _beat_loop(self, interval):
        """While a call runs: heartbeats; the item_timeout; and, in a process of its own,
        exit as soon as the client hangs up (killed, timed out): no computing for nobody.

        Waits in poll() on the connection's socket (for the client's hang-up only) and on
        a pipe written to when the first item of a call with an item_timeout starts; later
        deadlines follow from the progress it reads when it wakes at the previous one.
        """
        import os
        import select
        import time
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        try:
            poller.register(self._conn.fileno(), getattr(select, "POLLRDHUP", 0))
        except (OSError, ValueError, EOFError):
            pass
        next_beat = time.monotonic_ns() + int(interval * 1e9)
        try:
            while not self._conn.closed:
                wait = max(0, min(next_beat, self._deadline()) - time.monotonic_ns())
                events = poller.poll(wait / 1e6)
                if any(fd == self._wake_read for fd, _ in events):
                    os.read(self._wake_read, 4096)
                if any(fd != self._wake_read for fd, _ in events):   # the client hung up
                    if self._busy and self._dedicated:
                        os._exit(0)
                    return                    # nobody listens any more
                now = time.monotonic_ns()
                if not self._busy:
                    next_beat = now + int(interval * 1e9)
                    continue
                overdue = self._overdue(now)
                if overdue is not None:
                    self._limit = None        # tell the client once
                    self._beat(overdue, self._dedicated)
                    if self._dedicated:       # the item is stopped with its process
                        os._exit(0)
                elif now >= next_beat:
                    self._beat()
                    next_beat = now + int(interval * 1e9)
        except Exception:  # noqa: BLE001 - the connection is gone
            return
        finally:
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _deadline(self):
        position, started, limit = self._progress[0], self._progress[1], self._limit
        if limit is None or position < 0 or not self._busy:
            return float("inf")
        return started + limit

    def _overdue(self, now):
        """The position of the item running past the item_timeout, or None."""
        position, started, limit = self._progress[0], self._progress[1], self._limit
        if limit is None or position < 0 or now - started < limit:
            return None
        return position if self._progress[0] == position else None   # it did not just end

    def put(self, which, chunk):
        """Receive one chunk of a payload or batch bigger than one call."""
        self._parts[which].append(chunk)

    def more(self):
        """Send the next chunk of a reply bigger than one call."""
        return self._pending.pop()

    def run(self, key, payload, data, each, task, start, item_timeout=None):
        """Evaluate a batch; return reply bytes, (chunks left, first chunk), or None when
        the batch cannot be unpickled here (the client then sends it item by item)."""
        self._progress[0] = -1
        self._limit = None if item_timeout is None else int(item_timeout * 1e9)
        self._busy = True
        try:
            reply = self._run(key, payload, data, each, task, start)
        finally:
            self._busy = False
            self._limit = None
        if reply is None or len(reply) <= self._chunk:
            return reply
        chunks = [reply[i:i + self._chunk] for i in range(0, len(reply), self._chunk)]
        self._pending = chunks[:0:-1]
        return len(self._pending), chunks[0]

    def _joined(self, which, last):
        parts = self._parts[which]
        if not parts:
            return last
        parts.append(last)
        joined = b"".join(parts)
        parts.clear()
        return joined

    def _evaluated(self, call, items, positions):
        """evaluate(); with an item_timeout, each item's start and position are recorded
        first (in that order: the beat thread reads them in the other order)."""
        if self._limit is None:
            return self._evaluate.evaluate(call, items)
        import itertools
        import time
        progress, clock = self._progress, time.monotonic_ns
        numbers = iter(positions) if positions is not None else itertools.count()
        first = [True]

        def timed(item):
            progress[1] = clock()
            progress[0] = next(numbers)
            if first:                      # the beat thread learns the first deadline
                first.clear()
                self._os.write(self._wake_write, b"x")
            return call(item)
        return self._evaluate.evaluate(timed, items)

    def _run(self, key, payload, data, each, task, start):
        ev = self._evaluate
        if payload is not None:
            try:
                self._functions[key] = (ev.load_function(self._joined("payload", payload)), None)
            except BaseException as exc:  # noqa: BLE001 - reported for every item
                self._functions[key] = (None, ev.serialization_record(
                    f"the function of task {task} cannot be loaded on the remote worker", exc))
        call, failure = self._functions[key]
        data = self._joined("data", data)
        if not each:
            items, record = ev.decode_items(data, task, start)
            if record is not None:
                return None
            positions, blobs, records = None, None, {}
        else:
            blobs = self._pickle.loads(data)
            positions, items, records = [], [], {}
            for pos, blob in enumerate(blobs):
                if blob is None:      # could not be pickled by the client: its error is there
                    continue
                try:
                    items.append(self._pickle.loads(blob))
                    positions.append(pos)
                except Exception as exc:  # noqa: BLE001
                    records[pos] = ev.serialization_record(
                        f"item {start + pos} of task {task} cannot be unpickled on the remote "
                        f"worker", exc)
        if failure is not None:
            values, errors, elapsed = [None] * len(items), None, 0.0
            records.update({pos: failure for pos in (positions or range(len(items)))})
        else:
            values, errors, elapsed = self._evaluated(call, items, positions)
        if positions is not None:
            full, moved = [None] * len(blobs), {}
            for i, pos in enumerate(positions):
                full[pos] = values[i]
                if errors and i in errors:
                    moved[pos] = errors[i]
            values, errors = full, moved or None
        reply = ev.encode_reply(values, errors, elapsed, task, start)
        if records:
            values, more, elapsed = self._pickle.loads(reply)
            records.update(more or {})
            reply = self._pickle.dumps((values, records, elapsed), 5)
        return reply


_PROBE = """
import sys as _imap_sys, rpyc as _imap_rpyc
try:
    import dill as _imap_dill
    _imap_versions = (_imap_dill.__version__,)
except Exception as _imap_exc:
    _imap_versions = (None,)
_imap_versions = ('%d.%d' % _imap_sys.version_info[:2], _imap_rpyc.__version__) + _imap_versions
"""


class _State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    BROKEN = "broken"


class _Stalled(Exception):
    pass


class _Overdue(Exception):
    pass


# -- the handle ---------------------------------------------------------------------------

class RemoteHandle(WorkerHandle):
    """One worker slot on an RPyC classic server: one connection, one batch at a time.

    ``timeout``: seconds without any sign of life from the server while a call is pending
    (a reply, or one of the heartbeats the server sends every ``timeout / 4`` seconds at
    most while it evaluates) after which ``run`` raises WorkerLost; None means
    ``DEFAULT_TIMEOUT``. A long evaluation is not a stall: only a silent server is.
    ``tls``: None or ``dict(keyfile=, certfile=, cafile=)`` (mutual TLS).

    Example::

        handle = RemoteHandle("127.0.0.1", 18812)
        handle.open()
        values, errors, elapsed = handle.run(batch)
        handle.close()
    """

    def __init__(self, host: str, port: int = DEFAULT_PORT, slot: int = 1, *,
                 tls: dict | None = None, timeout: float | None = None,
                 connect_timeout: float | None = None):
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"remote_timeout must be a positive number of seconds or None "
                             f"(= {DEFAULT_TIMEOUT}), not {timeout!r}")
        self.host, self.port, self.slot = host, int(port), slot
        self.name = f"{host}:{port} slot {slot}"
        self.tls = _check_tls(tls)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout or min(self.timeout, CONNECT_TIMEOUT))
        self.interval = min(max(self.timeout / 4, 0.05), 5.0)
        self._lock = threading.Lock()
        self._state = _State.CLOSED
        self._killed = False
        self._conn = None
        self._stream: _Stream | None = None
        self._shipped: set[int] = set()
        self._payloads: dict[int, bytes] = {}
        self._last_sign = 0.0
        self._overdue: tuple[int, bool] | None = None   # (position, stopped) from the server
        self._beat = self._on_beat        # one bound method, referenced by the server
        self._remote = None               # async wrappers of the _RemoteSide methods
        self._side = None                 # the netref keeping the server side alive

    def __repr__(self) -> str:
        return f"<RemoteHandle {self.name} {self._state.value}>"

    # -- open ----------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, check versions, install the server side. Raise WorkerStartError."""
        self._release()                   # a handle is reopened after a lost connection
        where = f"{self.host}:{self.port}"
        try:
            stream = _open_stream(self.host, self.port, self.tls, self.connect_timeout)
        except _HandshakeFailed as exc:
            raise WorkerStartError(
                f"the TLS handshake with the remote worker server {where} failed: "
                f"{_cause(exc.__cause__)}; check remote_tls: the server must run with TLS "
                f"(--ssl-keyfile, --ssl-certfile, --ssl-cafile) and its certificate must be "
                f"signed by remote_tls['cafile']") from exc.__cause__
        except (OSError, EOFError) as exc:
            raise WorkerStartError(
                f"cannot connect to the remote worker server {where}: {_cause(exc)}; check "
                f"that a server runs there (python -m imap.server --port {self.port}, or "
                f"rpyc_classic --mode forking --port {self.port}) and that no firewall blocks "
                f"the port") from exc
        conn = None
        try:
            stream.sock.settimeout(self.timeout)
            conn = connect_channel(Channel(stream, compress=False), service=ClassicClient,
                                   config={"sync_request_timeout": self.connect_timeout})
            self._check_versions(conn, where)
            self._install(conn)
            conn._config["sync_request_timeout"] = CLOSE_TIMEOUT   # only close() waits now
        except WorkerStartError:
            _discard(conn, stream)
            raise
        except Exception as exc:  # noqa: BLE001 - reset, timeout, protocol or TLS error
            _discard(conn, stream)
            raise WorkerStartError(f"cannot open a worker on {where}: {_cause(exc)}"
                                   f"{_tls_hint(self.tls)}") from exc
        except BaseException:
            _discard(conn, stream)
            raise
        with self._lock:
            self._conn, self._stream, self._state = conn, stream, _State.OPEN
            self._killed = False
        self._shipped.clear()
        log.debug("connected to %s", self.name)

    def _check_versions(self, conn, where: str) -> None:
        conn.execute(_PROBE)
        remote = tuple(conn.eval("_imap_versions"))
        local = local_versions()
        if remote[2] is None:
            raise WorkerStartError(
                f"dill is not installed on {where} (the remote Python needs it to load "
                f"functions): install dill=={local[2]} there, with Python {local[0]} and "
                f"rpyc=={local[1]} as here")
        if remote != local:
            raise WorkerStartError(
                f"version mismatch with the remote worker server {where}: there Python "
                f"{remote[0]}, rpyc {remote[1]}, dill {remote[2]}; here Python {local[0]}, "
                f"rpyc {local[1]}, dill {local[2]}. Install the same Python minor version and "
                f"the same rpyc and dill versions on every host (functions travel as "
                f"bytecode: a mismatch can crash the server)")

    def _install(self, conn) -> None:
        side_source, evaluate_source = _sources()
        conn.execute(side_source)
        side = conn.namespace["_RemoteSide"](evaluate_source, self._beat, self.interval, CHUNK,
                                             conn.root.getconn())
        self._remote = (rpyc.async_(side.run), rpyc.async_(side.put), rpyc.async_(side.more))
        self._side = side                 # keeps the remote object (and the wrappers) alive

    # -- run -----------------------------------------------------------------------------

    def run(self, batch: Batch) -> tuple[list, dict | None, float]:
        """Evaluate ``batch`` on the server. Raise WorkerLost if the server is lost."""
        with self._lock:
            if self._state is not _State.OPEN:
                raise WorkerLost("was killed (its connection was shut down)" if self._killed
                                 else f"has no open connection ({self._state.value})")
        task = batch.task
        payload = None
        if task.key not in self._shipped:
            payload = self._payload(task)
            if isinstance(payload, BaseException):
                return [None] * len(batch.items), dict.fromkeys(range(len(batch.items)),
                                                                  payload), 0.0
        try:
            data, each, local_errors = pickle.dumps(batch.items, PROTOCOL), False, None
        except Exception:  # noqa: BLE001 - find the unpicklable items one by one
            data, each, local_errors = self._pickle_each(batch)
        self._overdue = None
        try:
            reply = self._request(task, payload, data, each, batch.start)
            if reply is None:             # the server could not unpickle the batch
                data, each, local_errors = self._pickle_each(batch)
                reply = self._request(task, None, data, True, batch.start)
        except (_Overdue, EOFError, OSError) as exc:
            if self._overdue is None:     # a lost connection (below)
                raise self._lost(f"lost its connection ({_cause(exc)})") from exc
            raise self._timed_out(batch) from None
        except _Stalled:
            raise self._lost(f"sent no reply and no heartbeat for {self.timeout:g} s (a "
                             f"stopped or overloaded server, or a network stall); "
                             f"remote_timeout sets this limit") from None
        except ValueError as exc:         # e.g. rpyc: invalid message type
            raise self._lost(f"lost its connection ({_cause(exc)})") from exc
        except Exception as exc:  # noqa: BLE001 - the server side itself failed
            raise self._lost(f"failed on the server ({_cause(exc)})") from exc
        except BaseException:
            self._mark_broken()           # interrupted mid-call: never reuse the connection
            raise
        return self._decode(reply, batch, local_errors)

    def _payload(self, task: TaskSpec):
        if task.payload is not None:
            return task.payload
        if task.key not in self._payloads:
            try:
                self._payloads[task.key] = dill.dumps((task.func, task.args, task.kwargs),
                                                      recurse=True)
            except Exception as exc:  # noqa: BLE001
                return SerializationError(
                    f"task {task.task_id}: the function {describe(task.func)} (with its args "
                    f"and kwargs) cannot be pickled with dill to send it to {self.host}: "
                    f"{type(exc).__name__}: {exc}")
        return self._payloads[task.key]

    def _pickle_each(self, batch: Batch) -> tuple[bytes, bool, dict]:
        blobs, errors = [], {}
        for pos, item in enumerate(batch.items):
            try:
                blobs.append(pickle.dumps(item, PROTOCOL))
            except Exception as exc:  # noqa: BLE001
                blobs.append(None)
                errors[pos] = SerializationError(
                    f"item {batch.start + pos} of task {batch.task.task_id} cannot be pickled "
                    f"to send it to {self.host}: {type(exc).__name__}: {exc}")
        return pickle.dumps(blobs, PROTOCOL), True, errors

    def _request(self, task: TaskSpec, payload, data: bytes, each: bool, start: int):
        run, put, more = self._remote
        if payload is not None:
            payload = self._upload(put, "payload", payload)
        data = self._upload(put, "data", data)
        reply = self._call(run, task.key, payload, data, each, task.task_id, start,
                           getattr(task, "item_timeout", None))
        self._shipped.add(task.key)
        if isinstance(reply, tuple):
            left, first = reply
            reply = b"".join([first] + [self._call(more) for _ in range(left)])
        return reply

    def _upload(self, put, which: str, blob: bytes) -> bytes:
        if len(blob) <= CHUNK:
            return blob
        view = memoryview(blob)
        last = (len(blob) - 1) // CHUNK * CHUNK
        for offset in range(0, last, CHUNK):
            self._call(put, which, bytes(view[offset:offset + CHUNK]))
        return bytes(view[last:])

    def _call(self, function, *args):
        """Call a remote method; wait while the server shows signs of life."""
        result = function(*args)
        done: list = []
        result.add_callback(done.append)
        waiting = lambda: not done  # noqa: E731
        conn = self._conn
        self._last_sign = time.monotonic()
        while not done:
            left = self._last_sign + self.timeout - time.monotonic()
            if left <= 0:
                raise _Stalled()
            if conn.serve(left, waiting=waiting):
                self._last_sign = time.monotonic()
            if self._overdue is not None:
                raise _Overdue()
        return result.value

    def _on_beat(self, overdue: int | None = None, stopped: bool = False) -> None:
        """Called by the server (inside ``serve`` in the slot thread) while it evaluates;
        with ``overdue``: that item ran past its item_timeout (``stopped``: with its
        process; else it runs on in a threaded server, which cannot stop it)."""
        self._last_sign = time.monotonic()
        if overdue is not None:
            self._overdue = (overdue, stopped)

    def _timed_out(self, batch: Batch) -> WorkerLost:
        position, stopped = self._overdue
        self._mark_broken()
        limit = getattr(batch.task, "item_timeout", None)
        what = "was killed" if stopped else "was disconnected"
        lost = WorkerLost(f"{what} after item {batch.start + position} ran longer than {limit} s"
                          f"{'' if stopped else ' (a threaded server cannot stop it)'}",
                          position)
        lost.timed_out = True             # the pool fails that item with TimeoutError
        return lost

    def _decode(self, reply: bytes, batch: Batch, local_errors: dict | None):
        try:
            values, records, elapsed = pickle.loads(reply)
        except Exception as exc:  # noqa: BLE001 - e.g. a result class unknown here
            error = SerializationError(
                f"the results of items {batch.start}..{batch.start + len(batch.items) - 1} of "
                f"task {batch.task.task_id} from {self.host}:{self.port} cannot be unpickled "
                f"here: {type(exc).__name__}: {exc}")
            return [None] * len(batch.items), dict.fromkeys(range(len(batch.items)),
                                                              error), 0.0
        errors = dict(local_errors or {})
        for pos, (kind, type_name, message, tb_text, blob) in (records or {}).items():
            tb_text = f"[on the remote worker {self.name}]\n{tb_text}"
            errors[pos] = rebuild_error((kind, type_name, message, tb_text, blob))
        return values, errors or None, elapsed

    def _lost(self, what: str) -> WorkerLost:
        """The pool writes 'worker <name> <message> while evaluating item ...'."""
        killed = self._mark_broken()
        return WorkerLost("was killed (its connection was shut down)" if killed else what)

    def _mark_broken(self) -> bool:
        """Never reuse this connection; return whether kill() broke it."""
        with self._lock:
            if self._state is _State.OPEN:
                self._state = _State.BROKEN
            return self._killed

    # -- close and kill --------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (the forked server child then exits). Idempotent."""
        self._release()

    def kill(self) -> None:
        """Shut the socket down now, from any thread: a blocked ``run`` raises WorkerLost."""
        with self._lock:
            stream = self._stream
            if self._state is _State.CLOSED or stream is None:
                return
            self._state = _State.BROKEN
            self._killed = True
            sock = stream.sock
            try:  # the plain socket's shutdown, also under TLS: the reader gets EOF
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except (OSError, TypeError, AttributeError):
                pass

    def _release(self) -> None:
        with self._lock:
            conn, stream, state = self._conn, self._stream, self._state
            self._conn = self._stream = self._remote = self._side = None
            self._state = _State.CLOSED
        self._payloads.clear()
        if conn is None:
            return
        if state is not _State.OPEN:
            stream.close()                # nothing to wait for on a broken connection
        try:
            conn._config["sync_request_timeout"] = CLOSE_TIMEOUT
            conn.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            log.debug("error closing %s", self.name, exc_info=True)
        stream.close()


@functools.lru_cache(maxsize=None)
def _sources() -> tuple[str, str]:
    """The source texts sent to every server (inspect.getsource of a class takes ~20 ms)."""
    return inspect.getsource(_RemoteSide), inspect.getsource(_evaluate)


def _discard(conn, stream: _Stream) -> None:
    stream.close()
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


def _cause(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, EOFError) and isinstance(exc.__cause__ or exc.__context__, OSError):
        text = str(exc.__cause__ or exc.__context__)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _tls_hint(tls: dict | None) -> str:
    if tls is None:
        return ("; if the server uses TLS (--ssl-cafile), give remote_tls=dict(keyfile=, "
                "certfile=, cafile=); a server of another rpyc major version also fails here")
    return ("; check remote_tls: remote_tls['certfile'] must be signed by the CA the server "
            "trusts (its --ssl-cafile)")
