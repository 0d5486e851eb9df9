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
``worker_remote`` and ``remote_tls`` and the socket are in ``_remote_args.py``; opening,
closing and killing the connection, with its states and shutdown order, in
``_remote_connection.py``. This module runs batches over it.
"""
from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import dill

from .._errors import SerializationError, rebuild_error
from .._evaluate import PROTOCOL
from ._remote_args import DEFAULT_PORT, _check_tls, parse_worker_remote
from ._remote_connection import CHUNK, DEFAULT_TIMEOUT, RemoteConnection, _cause, _State
# also imported from here by users and tests
from ._remote_connection import CLOSE_TIMEOUT as CLOSE_TIMEOUT
from ._remote_connection import CONNECT_TIMEOUT as CONNECT_TIMEOUT
from ._remote_connection import local_versions as local_versions
from .base import Batch, TaskSpec, WorkerLost, describe

__all__ = ["RemoteHandle", "parse_worker_remote", "make_remote_handles", "DEFAULT_PORT",
           "DEFAULT_TIMEOUT"]


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


class _StalledError(Exception):
    pass


class _OverdueError(Exception):
    pass


# -- the handle ---------------------------------------------------------------------------

class RemoteHandle(RemoteConnection):
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

    def __repr__(self) -> str:
        return f"<RemoteHandle {self.name} {self._state.value}>"

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
