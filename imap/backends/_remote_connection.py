"""The connection of a remote worker slot: open it (connect, compare versions, install the
server side), close it, kill it, and its state (the base class of ``RemoteHandle`` in
``remote.py``, which runs batches over it).

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
import socket
import sys
import threading
import time
from typing import Any, cast

import dill
import rpyc
from rpyc.core.channel import Channel
from rpyc.core.service import ClassicClient
from rpyc.utils.factory import connect_channel

from .. import _config
from .._errors import WorkerStartError
from ._remote_args import (DEFAULT_PORT, _check_tls, _HandshakeFailedError, _open_stream,
                           _Stream, _tls_hint)
from ._remote_side import _PROBE, _sources
from .base import WorkerHandle, WorkerLost

log = logging.getLogger(__name__)

#: seconds without any sign of life (a reply or a heartbeat) before a server counts as lost
DEFAULT_TIMEOUT = 30.0
#: longest wait for the TCP connection and for each request made by ``open()``
CONNECT_TIMEOUT = 10.0
#: how long ``close()`` waits for the server to acknowledge (rpyc's close is a request)
CLOSE_TIMEOUT = 1.0
#: the most bytes sent or received in one call
CHUNK = 1 << 20


def local_versions() -> tuple[str, str, str]:
    """This interpreter's (Python minor, rpyc, dill) versions, compared with each server's."""
    return (f"{sys.version_info[0]}.{sys.version_info[1]}", rpyc.__version__, dill.__version__)


class _State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    BROKEN = "broken"


class RemoteConnection(WorkerHandle):
    """One RPyC classic connection of a worker slot: open, close, kill and the state they
    share with the calls (``RemoteHandle`` documents the arguments and runs the batches)."""

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

    # -- signs of life and breakage (the slot thread) ------------------------------------

    def _on_beat(self, overdue: int | None = None, stopped: bool = False) -> None:
        """Called by the server (inside ``serve`` in the slot thread) while it evaluates;
        with ``overdue``: that item ran past its item_timeout (``stopped``: with its
        process; else it runs on in a threaded server, which cannot stop it)."""
        self._last_sign = time.monotonic()
        if overdue is not None:
            self._overdue = (overdue, stopped)

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
