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

The server side is the class ``_RemoteSide`` in ``_remote_side.py``: its source text (with
the source of ``imap._evaluate``) is sent with ``conn.execute``, so a plain ``rpyc_classic``
server with only rpyc and dill installed can serve IMap workers. The validation of
``worker_remote`` and ``remote_tls`` and the socket are in ``_remote_args.py``.

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
import logging
import pickle
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import dill
import rpyc
from rpyc.core.channel import Channel
from rpyc.core.service import ClassicClient
from rpyc.utils.factory import connect_channel

from .. import _config
from .._errors import SerializationError, WorkerStartError, rebuild_error
from .._evaluate import PROTOCOL
from ._remote_args import (DEFAULT_PORT, _check_tls, _HandshakeFailedError, _open_stream,
                           _Stream, _tls_hint, parse_worker_remote)
from ._remote_side import _PROBE, _sources
from .base import Batch, TaskSpec, WorkerHandle, WorkerLost, describe

__all__ = ["RemoteHandle", "parse_worker_remote", "make_remote_handles", "DEFAULT_PORT",
           "DEFAULT_TIMEOUT"]

log = logging.getLogger(__name__)

#: seconds without any sign of life (a reply or a heartbeat) before a server counts as lost
DEFAULT_TIMEOUT = 30.0
#: longest wait for the TCP connection and for each request made by ``open()``
CONNECT_TIMEOUT = 10.0
#: how long ``close()`` waits for the server to acknowledge (rpyc's close is a request)
CLOSE_TIMEOUT = 1.0
#: the most bytes sent or received in one call
CHUNK = 1 << 20


def make_remote_handles(specs: Iterable[Any] | None, tls: dict[str, str] | None = None,
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
    handles: list[RemoteHandle] = []
    seen: dict[tuple[str, int], int] = {}
    for host, port, count in specs:
        for _ in range(count):
            seen[host, port] = seen.get((host, port), 0) + 1
            handles.append(RemoteHandle(host, port, seen[host, port], tls=tls,
                                        timeout=timeout))
    return handles


def local_versions() -> tuple[str, str, str]:
    """This interpreter's (Python minor, rpyc, dill) versions, compared with each server's."""
    return (f"{sys.version_info[0]}.{sys.version_info[1]}", rpyc.__version__, dill.__version__)


class _State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    BROKEN = "broken"


class _StalledError(Exception):
    pass


class _OverdueError(Exception):
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

    #: a server that refuses a reconnection is given up at once (as it always was)
    start_attempts = 1

    def __init__(self, host: str, port: int = DEFAULT_PORT, slot: int = 1, *,
                 tls: dict[str, str] | None = None, timeout: float | None = None,
                 connect_timeout: float | None = None) -> None:
        try:   # the one validator of seconds (NaN, infinities, negatives, non-numbers)
            checked = _config.seconds("remote_timeout", timeout, default=DEFAULT_TIMEOUT,
                                      allow_zero=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"remote_timeout must be a positive number of seconds or None "
                             f"(= {DEFAULT_TIMEOUT}), not {timeout!r}") from exc
        self.host, self.port, self.slot = host, int(port), slot
        self.name = f"{host}:{port} slot {slot}"
        self.tls = _check_tls(tls)
        self.timeout = float(checked)
        self.connect_timeout = float(connect_timeout or min(self.timeout, CONNECT_TIMEOUT))
        self.interval = min(max(self.timeout / 4, 0.05), 5.0)
        self._lock = threading.Lock()
        self._state = _State.CLOSED
        self._killed = False
        self._conn: Any = None            # an rpyc Connection (rpyc ships no types)
        self._stream: _Stream | None = None
        self._shipped: set[int] = set()
        self._payloads: dict[int, bytes] = {}
        self._last_sign = 0.0
        self._overdue: tuple[int, bool] | None = None   # (position, stopped) from the server
        self._beat = self._on_beat        # one bound method, referenced by the server
        # async wrappers of the _RemoteSide methods run, put and more
        self._remote: tuple[Any, Any, Any] | None = None
        self._side: Any = None            # the netref keeping the server side alive

    def __repr__(self) -> str:
        return f"<RemoteHandle {self.name} {self._state.value}>"

    # -- open ----------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, check versions, install the server side. Raise WorkerStartError."""
        self._release()                   # a handle is reopened after a lost connection
        where = f"{self.host}:{self.port}"
        try:
            stream = _open_stream(self.host, self.port, self.tls, self.connect_timeout)
        except _HandshakeFailedError as exc:   # always raised "from" the handshake's error
            cause = cast(BaseException, exc.__cause__)
            raise WorkerStartError(
                f"the TLS handshake with the remote worker server {where} failed: "
                f"{_cause(cause)}; check remote_tls: the server must run with TLS "
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
        except Exception as exc:          # reset, timeout, protocol or TLS error
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

    def _check_versions(self, conn: Any, where: str) -> None:
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

    def _install(self, conn: Any) -> None:
        side_source, evaluate_source = _sources()
        conn.execute(side_source)
        side = conn.namespace["_RemoteSide"](evaluate_source, self._beat, self.interval, CHUNK,
                                             conn.root.getconn())
        self._remote = (rpyc.async_(side.run), rpyc.async_(side.put), rpyc.async_(side.more))
        self._side = side                 # keeps the remote object (and the wrappers) alive

    # -- run -----------------------------------------------------------------------------

    def run(self, batch: Batch) -> tuple[list[Any], dict[int, BaseException] | None, float]:
        """Evaluate ``batch`` on the server. Raise WorkerLost if the server is lost."""
        with self._lock:
            if self._state is not _State.OPEN:
                raise WorkerLost("was killed (its connection was shut down)" if self._killed
                                 else f"has no open connection ({self._state.value})")
        task = batch.task
        payload: bytes | None = None
        if task.key not in self._shipped:
            shipped = self._payload(task)
            if isinstance(shipped, BaseException):
                return [None] * len(batch.items), dict.fromkeys(range(len(batch.items)),
                                                                  shipped), 0.0
            payload = shipped
        local_errors: dict[int, BaseException] | None
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
        except (_OverdueError, EOFError, OSError) as exc:
            if self._overdue is None:     # a lost connection (below)
                raise self._lost(f"lost its connection ({_cause(exc)})") from exc
            raise self._timed_out(batch) from None
        except _StalledError:
            raise self._lost(f"sent no reply and no heartbeat for {self.timeout:g} s (a "
                             f"stopped or overloaded server, or a network stall); "
                             f"remote_timeout sets this limit") from None
        except ValueError as exc:         # e.g. rpyc: invalid message type
            raise self._lost(f"lost its connection ({_cause(exc)})") from exc
        except Exception as exc:          # the server side itself failed
            raise self._lost(f"failed on the server ({_cause(exc)})") from exc
        except BaseException:
            self._mark_broken()           # interrupted mid-call: never reuse the connection
            raise
        # cast: a batch sent item by item (each=True) is always answered
        return self._decode(cast(bytes, reply), batch, local_errors)

    def _payload(self, task: TaskSpec) -> bytes | SerializationError:
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

    def _pickle_each(self, batch: Batch) -> tuple[bytes, bool, dict[int, BaseException]]:
        blobs: list[bytes | None] = []
        errors: dict[int, BaseException] = {}
        for pos, item in enumerate(batch.items):
            try:
                blobs.append(pickle.dumps(item, PROTOCOL))
            except Exception as exc:  # noqa: BLE001
                blobs.append(None)
                errors[pos] = SerializationError(
                    f"item {batch.start + pos} of task {batch.task.task_id} cannot be pickled "
                    f"to send it to {self.host}: {type(exc).__name__}: {exc}")
        return pickle.dumps(blobs, PROTOCOL), True, errors

    def _request(self, task: TaskSpec, payload: bytes | None, data: bytes, each: bool,
                 start: int) -> bytes | None:
        """The reply bytes, or None when the server could not unpickle the batch."""
        assert self._remote is not None     # set by open(): the handle is open
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
        return cast("bytes | None", reply)   # what _RemoteSide.run returned, joined

    def _upload(self, put: Callable[..., Any], which: str, blob: bytes) -> bytes:
        if len(blob) <= CHUNK:
            return blob
        view = memoryview(blob)
        last = (len(blob) - 1) // CHUNK * CHUNK
        for offset in range(0, last, CHUNK):
            self._call(put, which, bytes(view[offset:offset + CHUNK]))
        return bytes(view[last:])

    def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call a remote method; wait while the server shows signs of life."""
        result = function(*args)
        done: list[Any] = []
        result.add_callback(done.append)
        waiting = lambda: not done  # noqa: E731
        conn = self._conn
        self._last_sign = time.monotonic()
        while not done:
            left = self._last_sign + self.timeout - time.monotonic()
            if left <= 0:
                raise _StalledError()
            if conn.serve(left, waiting=waiting):
                self._last_sign = time.monotonic()
            if self._overdue is not None:
                raise _OverdueError()
        return result.value

    def _on_beat(self, overdue: int | None = None, stopped: bool = False) -> None:
        """Called by the server (inside ``serve`` in the slot thread) while it evaluates;
        with ``overdue``: that item ran past its item_timeout (``stopped``: with its
        process; else it runs on in a threaded server, which cannot stop it)."""
        self._last_sign = time.monotonic()
        if overdue is not None:
            self._overdue = (overdue, stopped)

    def _timed_out(self, batch: Batch) -> WorkerLost:
        assert self._overdue is not None    # run() calls it only then
        position, stopped = self._overdue
        self._mark_broken()
        limit = getattr(batch.task, "item_timeout", None)
        what = "was killed" if stopped else "was disconnected"
        lost = WorkerLost(f"{what} after item {batch.start + position} ran longer than {limit} s"
                          f"{'' if stopped else ' (a threaded server cannot stop it)'}",
                          position)
        lost.timed_out = True             # the pool fails that item with TimeoutError
        return lost

    def _decode(self, reply: bytes, batch: Batch, local_errors: dict[int, BaseException] | None
                ) -> tuple[list[Any], dict[int, BaseException] | None, float]:
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
        assert stream is not None           # set together with conn
        if state is not _State.OPEN:
            stream.close()                # nothing to wait for on a broken connection
        try:
            conn._config["sync_request_timeout"] = CLOSE_TIMEOUT
            conn.close()
        except Exception:                 # closing is best effort
            log.debug("error closing %s", self.name, exc_info=True)
        stream.close()


def _discard(conn: Any, stream: _Stream) -> None:
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
