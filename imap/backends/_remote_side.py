"""The server side of a RemoteHandle: code sent to each server with ``conn.execute``.

    client: conn.execute(_PROBE)        -> the server's (Python, rpyc, dill) versions
            conn.execute(source of _RemoteSide); _RemoteSide(source of imap._evaluate, ...)
    server: the connection's serving thread runs put/run/more (and the user's function);
            the beat thread only sends (heartbeats, an item past its item_timeout)

Only the text of ``_RemoteSide`` (``inspect.getsource``) and of ``imap._evaluate`` is sent,
so the class must stay self-contained: its methods import what they need (standard library,
rpyc, dill) and use nothing else defined in this module or in imap. A plain
``rpyc_classic`` server with only rpyc and dill installed can then serve IMap workers.
The class text runs there without ``from __future__ import annotations``: the annotations
of its signatures are builtins or strings (those of local variables are never evaluated).
"""
from __future__ import annotations

import functools
import inspect
import threading
from typing import TYPE_CHECKING

from .. import _evaluate

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

    from .._evaluate import ErrorRecord


class _RemoteSide:
    """The other end of a RemoteHandle, living in the server process (one per connection).

    Self-contained: its methods import what they need (standard library, rpyc, dill), since
    the source text of this class is executed on a server where imap may not be installed.

    Threads: the connection's serving thread runs ``run`` (and the user's function); the
    beat thread only reads ``_busy``, ``_limit`` and ``_progress`` and sends asynchronous
    calls: ``beat()`` every ``interval`` s while a call runs, ``beat(position)`` when the
    item at ``position`` ran past its item_timeout.
    """

    def __init__(self, evaluate_source: str, beat: "Callable[..., None]", interval: float,
                 chunk: int, server_conn: "Any") -> None:
        import os
        import pickle
        import rpyc
        import socket
        import threading
        import types
        module = types.ModuleType("imap_evaluate_shipped")
        exec(compile(evaluate_source, "imap/_evaluate.py (shipped)", "exec"), module.__dict__)
        self._evaluate: ModuleType = module
        self._pickle = pickle
        self._os = os
        # task key -> (call, None) or (None, error record)
        self._functions: dict[int, tuple[Callable[[Any], Any] | None, ErrorRecord | None]] = {}
        self._parts: dict[str, list[bytes]] = {"payload": [], "data": []}
        self._pending: list[bytes] = []   # reply chunks not fetched yet, last one first
        self._chunk = chunk
        self._busy = False
        self._limit: int | None = None    # item_timeout of the running call, in ns
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

    def _beat_loop(self, interval: float) -> None:
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

    def _deadline(self) -> float:
        position, started, limit = self._progress[0], self._progress[1], self._limit
        if limit is None or position < 0 or not self._busy:
            return float("inf")
        return started + limit

    def _overdue(self, now: int) -> int | None:
        """The position of the item running past the item_timeout, or None."""
        position, started, limit = self._progress[0], self._progress[1], self._limit
        if limit is None or position < 0 or now - started < limit:
            return None
        return position if self._progress[0] == position else None   # it did not just end

    def put(self, which: str, chunk: bytes) -> None:
        """Receive one chunk of a payload or batch bigger than one call."""
        self._parts[which].append(chunk)

    def more(self) -> bytes:
        """Send the next chunk of a reply bigger than one call."""
        return self._pending.pop()

    def run(self, key: int, payload: bytes | None, data: bytes, each: bool, task: int,
            start: int, item_timeout: float | None = None) -> bytes | tuple[int, bytes] | None:
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

    def _joined(self, which: str, last: bytes) -> bytes:
        parts = self._parts[which]
        if not parts:
            return last
        parts.append(last)
        joined = b"".join(parts)
        parts.clear()
        return joined

    def _evaluated(self, call: "Callable[[Any], Any]", items: "list[Any]",
                   positions: list[int] | None
                   ) -> "tuple[list[Any], dict[int, BaseException] | None, float]":
        """evaluate(); with an item_timeout, each item's start and position are recorded
        first (in that order: the beat thread reads them in the other order)."""
        outcome: tuple[list[Any], dict[int, BaseException] | None, float]
        if self._limit is None:
            outcome = self._evaluate.evaluate(call, items)
            return outcome
        import itertools
        import time
        progress, clock = self._progress, time.monotonic_ns
        numbers = iter(positions) if positions is not None else itertools.count()
        first = [True]

        def timed(item: object) -> object:
            progress[1] = clock()
            progress[0] = next(numbers)
            if first:                      # the beat thread learns the first deadline
                first.clear()
                self._os.write(self._wake_write, b"x")
            return call(item)
        outcome = self._evaluate.evaluate(timed, items)
        return outcome

    def _run(self, key: int, payload: bytes | None, data: bytes, each: bool, task: int,
             start: int) -> bytes | None:
        ev = self._evaluate
        records: dict[int, ErrorRecord]
        positions: list[int] | None
        blobs: list[bytes | None] | None
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
            assert call is not None       # loaded: no failure
            values, errors, elapsed = self._evaluated(call, items, positions)
        if positions is not None:
            assert blobs is not None      # read with positions (each)
            full: list[Any] = [None] * len(blobs)
            moved: dict[int, BaseException] = {}
            for i, pos in enumerate(positions):
                full[pos] = values[i]
                if errors and i in errors:
                    moved[pos] = errors[i]
            values, errors = full, moved or None
        reply: bytes = ev.encode_reply(values, errors, elapsed, task, start)
        if records:
            values, more, elapsed = self._pickle.loads(reply)
            records.update(more or {})
            reply = self._pickle.dumps((values, records, elapsed), 5)
        return reply


#: run first on every connection: the server's versions, compared with local_versions()
_PROBE = """
import sys as _imap_sys, rpyc as _imap_rpyc
try:
    import dill as _imap_dill
    _imap_versions = (_imap_dill.__version__,)
except Exception as _imap_exc:
    _imap_versions = (None,)
_imap_versions = ('%d.%d' % _imap_sys.version_info[:2], _imap_rpyc.__version__) + _imap_versions
"""


_sources_lock = threading.Lock()


def _sources() -> tuple[str, str]:
    """The source texts, made once (every slot thread of a new pool asks at the same time:
    ``inspect.getsource`` parses with ``ast``, and CPython 3.11 can fail
    concurrent parses with 'SystemError: AST constructor recursion depth mismatch')."""
    with _sources_lock:
        return _sources_once()


@functools.lru_cache(maxsize=None)
def _sources_once() -> tuple[str, str]:
    """The source texts sent to every server (inspect.getsource of a class takes ~20 ms)."""
    return inspect.getsource(_RemoteSide), inspect.getsource(_evaluate)
