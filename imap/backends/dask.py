"""Dask workers: the slots of an IMap submit their batches to a Dask ``distributed`` cluster.

    IMap(worker_type='dask', worker_remote=Client | 'tcp://host:8786' | Cluster | None)

    start(): make_dask_handles --> _Session.open(): a Client (and a LocalCluster for None),
             a probe task checks the workers' Python and dill; 2 slots per Dask thread
    slot thread --run(batch)--> DaskHandle --client.submit(run_batch, ..., key=unique,
             pure=False)--> scheduler --> a worker thread: _dask_side.run_batch
             <-- done callback (Dask's callback thread) sets the slot's Event
             <-- future.result(): (reply, overdue, where), the process backend's reply
    any thread --kill()--> sets the slot's Event: a waiting run() raises WorkerLost at once

One future per batch, never per item (Dask pays about 1 ms per task), with a unique key and
``pure=False`` so Dask never merges two batches. A slot has one batch in flight at a time,
so the window of submitted batches is bounded by the slots (the feeder's buffer bounds the
rest). Two slots per Dask thread keep a worker's next batch queued while it evaluates one.
The task's dill payload goes to the cluster once per run, as the result of a task
(``_dask_side.hold``) passed to every batch as its future: a worker fetches it once and
loads it once (``_dask_side`` caches the loaded function by the session's token and the
task's key), and Dask recomputes it when the worker holding it dies (``client.scatter``
would lose it with that worker).

Who owns what: the session (one per run of the IMap) owns the Client, the LocalCluster it
made, the payload futures and the lost-scheduler flag, all under ``_Session._lock``; each
handle owns the Event its slot waits on and its killed flag (``DaskHandle._lock``). Dask's
own threads only ever set an Event.

Faults: a worker that dies is Dask's business (it reruns the batch on another worker); a
batch that killed ``distributed.scheduler.allowed-failures + 1`` workers comes back as
``KilledWorker`` and each of its items fails in place with WorkerDiedError (it is not split
and rerun item by item: every rerun of a worker-killing item costs Dask several workers).
A lost scheduler cancels every future at once: the batch's items and every later batch fail
in place with WorkerDiedError naming the scheduler, and the run stays broken until stop().
``item_timeout`` is enforced on the worker (``_dask_side.evaluate_limited``): the item is
abandoned, not stopped, and the rest of its batch is submitted again.

Shutdown order (the pool stops the slots; see ``imap._pool``):
 1. each slot finishes (or, killed, abandons) its batch; its future is released
 2. each slot closes its handle, which returns one lease of the session
 3. the last lease closes the session: the payloads are released, then the Client and the
    LocalCluster if the session made them (a Client or Cluster given by the caller is
    never closed)
"""
from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import os
import pickle
import threading
import traceback
import uuid
from concurrent.futures import CancelledError
from typing import Any, NamedTuple

try:
    import distributed
    from distributed import Client, Future
    from distributed.deploy.cluster import Cluster
    from distributed.scheduler import KilledWorker
except ImportError as exc:  # pragma: no cover - exercised with distributed hidden
    raise ImportError(f"IMap(worker_type='dask') needs Dask's distributed package: pip "
                      f"install 'papy[dask]' (it was not found: {exc})") from exc

from .._errors import (
    SerializationError,
    WorkerDiedError,
    WorkerStartError,
    attach_traceback,
    rebuild_error,
)
from . import _dask_side
from .base import Batch, TaskSpec, WorkerHandle, WorkerLost, describe

__all__ = ["SLOTS_PER_THREAD", "STRIDE_PER_THREAD", "DaskHandle", "dask_workers",
           "make_dask_handles"]

log = logging.getLogger(__name__)

#: slots (batches in flight) per Dask worker thread (measured: 1 -> 2 slots took 200 items
#: of 5 ms from 2.0 s to 1.15 s on 2 worker processes; 3 gained nothing)
SLOTS_PER_THREAD = 2
#: the default stride per Dask thread (IMap uses 2048 per local worker): the batch size is
#: capped at stride / threads, and a Dask task costs milliseconds where a pipe message costs
#: microseconds (measured on 2 worker processes, x + 1: 0.3 M items/s with 2048, 2 M with
#: 32768)
STRIDE_PER_THREAD = 32768
#: a Dask batch costs milliseconds of scheduling and round trips, a local one microseconds:
#: run() reports the evaluation time divided by this, so the front end's adaptive batch
#: size (aiming at imap._task.TARGET_BATCH_SECONDS of reported time, 10 ms) makes Dask
#: batches this many times longer
BATCH_TIME_SCALE = 5
#: seconds to connect to a scheduler, and for the probe task to run at start
CONNECT_TIMEOUT = 30.0
#: a slot waiting for its batch checks the scheduler connection this often (seconds); a
#: lost connection cancels the futures at once, so this is only a safety net
HEALTH_SECONDS = 1.0
#: seconds to fetch a finished batch's results from its worker
RESULT_TIMEOUT = 120.0
PROTOCOL = 5


# -- construction-time checks ---------------------------------------------------------

def dask_workers(target: Any, worker_num: int | None) -> tuple[Any, int]:
    """Check ``worker_remote`` for a Dask IMap; return it with the number of Dask threads to
    keep busy (``worker_num``, by default the cluster's threads).

    ``target`` is a ``distributed.Client`` (synchronous, running), a ``Cluster`` (e.g. a
    ``LocalCluster`` or a dask-jobqueue cluster), a scheduler address
    (``'tcp://host:8786'``, asked for its threads now unless ``worker_num`` is given) or None
    (the IMap makes a ``LocalCluster`` of ``worker_num`` processes, default: the CPUs).
    """
    if worker_num is not None and (isinstance(worker_num, bool) or not isinstance(
            worker_num, int) or worker_num < 1):
        raise ValueError(f"worker_num must be an int >= 1 or None (the cluster's threads) for "
                         f"worker_type='dask', not {worker_num!r}")
    if target is None:
        return None, worker_num or os.cpu_count() or 1
    if isinstance(target, Client):
        if target.asynchronous:
            raise ValueError("worker_remote: an asynchronous distributed.Client cannot serve "
                             "an IMap (its slots wait in threads); give a synchronous one or "
                             "its scheduler address")
        if target.status != "running":
            raise ValueError(f"worker_remote: the distributed.Client is {target.status}, not "
                             f"running")
        threads = worker_num or sum(target.nthreads().values())  # type: ignore[no-untyped-call]
    elif isinstance(target, Cluster):
        threads = worker_num or sum(w.get("nthreads", 0) for w in
                                    target.scheduler_info.get("workers", {}).values())
    elif isinstance(target, str) and target.strip():
        target = target.strip()
        threads = worker_num or _ask_threads(target)
    else:
        raise TypeError(f"worker_remote for worker_type='dask' is a distributed.Client, a "
                        f"Dask Cluster, a scheduler address such as 'tcp://host:8786', or "
                        f"None (a LocalCluster of its own), not {target!r}")
    if threads < 1:
        raise ValueError(f"the Dask cluster at {_where(target)} has no workers yet; give "
                         f"worker_num=N (the Dask threads the IMap should keep busy)")
    return target, threads


class _OwnClient(Client):
    """The Client an IMap makes: never Dask's default client, and one that cannot connect
    stops its IO loop thread (distributed 2026.8 leaves it running: the failed Client is
    gone, but its LoopRunner still counts it)."""

    def __init__(self, target: Any):
        super().__init__(target, set_as_default=False,  # type: ignore[no-untyped-call]
                         timeout=CONNECT_TIMEOUT)

    def start(self, **kwargs: Any) -> None:
        try:
            super().start(**kwargs)  # type: ignore[no-untyped-call]
        except BaseException:
            runner = getattr(self, "_loop_runner", None)
            if runner is not None:
                _quietly(runner.stop)
            raise


def _ask_threads(address: str) -> int:
    try:
        with _OwnClient(address) as client:
            return sum(client.nthreads().values())
    except (OSError, TimeoutError) as exc:
        raise WorkerStartError(f"cannot reach the Dask scheduler at {address}: "
                               f"{type(exc).__name__}: {exc}") from exc


def _where(target: Any) -> str:
    if isinstance(target, Client):
        return str(getattr(target.scheduler, "address", target))
    if isinstance(target, Cluster):
        return str(target.scheduler_address)
    return str(target)


def make_dask_handles(target: Any, worker_num: int, name: str) -> list[DaskHandle]:
    """Open a session on the cluster (raise WorkerStartError) and return its slots."""
    session = _Session(target, worker_num, name)
    session.open()
    count = SLOTS_PER_THREAD * worker_num
    session.leases = count
    return [DaskHandle(session, index) for index in range(count)]


# -- the session: one per run of an IMap ------------------------------------------------

class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    LOST = "lost"        # the scheduler went away: every batch fails at once
    CLOSED = "closed"


class _Session:
    """The connection of one run of an IMap to a Dask cluster (see the module docstring)."""

    def __init__(self, target: Any, worker_num: int, name: str):
        self.target = target
        self.worker_num = worker_num
        self.name = name
        self.token = uuid.uuid4().hex[:16]
        self.client: Client | None = None
        self.address = _where(target) if target is not None else "(a LocalCluster)"
        self.leases = 0
        self.lost_reason = ""
        self._cluster: Any = None           # a LocalCluster made here
        self._owns_client = False
        self._payloads: dict[int, Future[bytes]] = {}
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._state = _State.NEW

    def open(self) -> None:
        try:
            self._connect()
            self._probe()
        except BaseException:
            self._close_connection()
            raise
        with self._lock:
            self._state = _State.OPEN

    def _connect(self) -> None:
        target = self.target
        try:
            if isinstance(target, Client):
                self.client = target
                return
            self._owns_client = True
            if target is None:
                self._cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=self.worker_num, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address="127.0.0.1:0")
                self.address = str(self._cluster.scheduler_address)
                target = self._cluster
            self.client = _OwnClient(target)
        except Exception as exc:  # noqa: BLE001 - any failure to connect
            what = "start a LocalCluster" if target is None else \
                f"connect to the Dask scheduler at {self.address}"
            raise WorkerStartError(f"cannot {what}: {type(exc).__name__}: {exc}") from exc

    def _probe(self) -> None:
        client = self.client
        assert client is not None
        try:
            future = client.submit(_dask_side.probe, key=f"imap-probe-{self.token}",
                                   pure=False)
            remote = tuple(future.result(timeout=CONNECT_TIMEOUT))
        except Exception as exc:  # noqa: BLE001 - e.g. imap not installed on the workers
            raise WorkerStartError(
                f"the Dask workers of {self.address} cannot run IMap batches: "
                f"{type(exc).__name__}: {exc}. Install papy on every worker (pip install "
                f"'papy[dask]', with the same Python minor version and dill as here), and "
                f"check that the cluster has workers") from exc
        local = _dask_side.probe()
        if remote != local:
            raise WorkerStartError(
                f"version mismatch with the Dask workers of {self.address}: there Python "
                f"{remote[0]}, dill {remote[1]}; here Python {local[0]}, dill {local[1]}. "
                f"Functions travel as bytecode: use the same Python minor version and dill "
                f"version everywhere")

    # -- used by the slots -------------------------------------------------------------

    def next_key(self) -> str:
        return f"imap-{self.name}-{self.token}-{next(self._keys)}"

    def payload(self, spec: TaskSpec) -> Future[bytes]:
        """The future of the task's dill payload, sent to the cluster once per session."""
        with self._lock:
            future = self._payloads.get(spec.key)
        if future is not None:
            return future
        data = spec.payload
        if data is None:
            import dill
            try:
                data = dill.dumps((spec.func, spec.args, spec.kwargs), recurse=True)
            except Exception as exc:  # noqa: BLE001
                raise SerializationError(
                    f"task {spec.task_id}: the function {describe(spec.func)} (with its args "
                    f"and kwargs) cannot be pickled with dill to send it to the Dask "
                    f"workers: {type(exc).__name__}: {exc}") from exc
        assert self.client is not None
        # a task that returns the payload, not scattered data: Dask recomputes it if the
        # worker holding it dies, whereas scattered data would be lost with it
        future = self.client.submit(_dask_side.hold, data, pure=False,
                                    key=f"imap-payload-{self.name}-{self.token}-{spec.key}")
        with self._lock:
            return self._payloads.setdefault(spec.key, future)

    def lost(self) -> str | None:
        """Why the scheduler cannot be used any more, or None while it can."""
        with self._lock:
            if self._state is _State.LOST:
                return self.lost_reason
            client = self.client
        status = client.status if client is not None else "closed"
        if status == "running":
            return None
        return self.mark_lost(f"the client's connection is {status}")

    def mark_lost(self, detail: str) -> str:
        with self._lock:
            if self._state is _State.OPEN:
                self._state = _State.LOST
                self.lost_reason = (f"the connection to the Dask scheduler at {self.address} "
                                    f"was lost ({detail}); stop() the IMap and start() it "
                                    f"again once the scheduler is back")
                log.error("%s: %s", self.name, self.lost_reason)
            return self.lost_reason

    def release(self) -> None:
        """A slot is done with the session; the last one closes it."""
        with self._lock:
            self.leases -= 1
            if self.leases > 0 or self._state is _State.CLOSED:
                return
            self._state = _State.CLOSED
            payloads = list(self._payloads.values())
            self._payloads.clear()
        for future in payloads:
            _quietly(future.release)
        self._close_connection()

    def _close_connection(self) -> None:
        client, cluster = self.client, self._cluster
        self._cluster = None
        if client is not None and self._owns_client:
            self.client = None
            _quietly(lambda: client.close(timeout=CONNECT_TIMEOUT))  # type: ignore[no-untyped-call]
        if cluster is not None:
            _quietly(lambda: cluster.close(timeout=CONNECT_TIMEOUT))


# -- the slots ----------------------------------------------------------------------------

#: (values, errors, elapsed) of a batch or of a part of it
_Outcome = tuple[list[Any], "dict[int, BaseException] | None", float]


class _Reply(NamedTuple):
    """A decoded reply of ``_dask_side.run_batch``; ``values`` is None when the worker
    could not unpickle the batch as a whole (``records[-1]`` says why)."""

    values: list[Any] | None
    records: dict[int, Any] | None
    elapsed: float
    where: str
    nbytes: int

    @classmethod
    def decode(cls, reply: bytes, overdue: int | None, where: str, items: list[Any],
               spec: TaskSpec, start: int) -> _Reply | _Outcome:
        """The reply, or the outcome of every item when it cannot be used (a reply that
        does not cover a first part of the items would make run() loop forever)."""
        try:
            values, records, elapsed = pickle.loads(reply)
        except Exception as exc:  # noqa: BLE001 - e.g. a result's class unknown here
            error = SerializationError(
                f"the results of items {start}..{start + len(items) - 1} of task "
                f"{spec.task_id} from the Dask worker {where} cannot be unpickled here: "
                f"{type(exc).__name__}: {exc}")
            return _every_item(items, error)
        if values is not None and (not values or len(values) > len(items) or (
                overdue is not None and len(values) != overdue + 1)):
            return _every_item(items, RuntimeError(
                f"the Dask worker {where} replied with {len(values)} values for items "
                f"{start}..{start + len(items) - 1} of task {spec.task_id}"))
        return cls(values, records, elapsed, where, len(reply))


class DaskHandle(WorkerHandle):
    """One slot of a Dask IMap: one batch (one future) in flight at a time."""

    def __init__(self, session: _Session, index: int):
        self.name = f"dask slot {index} on {session.address}"
        self._session = session
        self._lock = threading.Lock()
        self._killed = False
        self._released = False
        self._done: threading.Event | None = None

    def open(self) -> None:
        with self._lock:
            self._killed = False

    def close(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._session.release()

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            done = self._done
        if done is not None:
            done.set()

    def run(self, batch: Batch) -> _Outcome:
        count = len(batch.items)
        values: list[Any] = []
        errors: dict[int, BaseException] = {}
        elapsed = 0.0
        while len(values) < count:       # more than once only after an item_timeout
            part = self._run_part(batch, len(values))
            errors.update({len(values) + k: exc for k, exc in (part[1] or {}).items()})
            values += part[0]
            elapsed += part[2]
        return values, errors or None, elapsed / BATCH_TIME_SCALE

    def _run_part(self, batch: Batch, offset: int) -> _Outcome:
        """Evaluate the items from ``offset`` on: (values, errors, elapsed) of the items
        evaluated, which stop after an item abandoned at its item_timeout."""
        session, spec = self._session, batch.task
        items = batch.items[offset:] if offset else batch.items
        start = batch.start + offset
        reason = session.lost()
        if reason is not None:
            return _fail_all(items, start, spec, reason, session.address)
        try:
            payload = session.payload(spec)
        except SerializationError as exc:
            return _every_item(items, exc)
        except Exception as exc:  # noqa: BLE001 - the scheduler is unreachable
            reason = session.mark_lost(f"sending the function failed: {exc!r}")
            return _fail_all(items, start, spec, reason, session.address)
        data, local = _pickle_items(items, spec, start)
        done = self._submit_and_wait(payload, data, local is not None, items, start, spec)
        if isinstance(done, _Reply) and done.values is None and local is None:
            # the worker cannot unpickle the batch as a whole: send the items one by one
            data, local = _pickle_items(items, spec, start, each=True)
            done = self._submit_and_wait(payload, data, True, items, start, spec)
        if not isinstance(done, _Reply):
            return done
        if done.values is None:
            return _every_item(items, rebuild_error((done.records or {})[-1]))
        batch.nbytes += len(data) + done.nbytes
        local = local or {}
        errors = {pos: local[pos] if pos in local else _remote_error(record, done.where)
                  for pos, record in (done.records or {}).items()}
        return done.values, errors or None, done.elapsed

    def _submit_and_wait(self, payload: Future[bytes], data: bytes, each: bool, items: list[Any],
                         start: int, spec: TaskSpec) -> _Reply | _Outcome:
        """Submit one part of a batch and wait for it: its reply, or the outcome of every
        item when it failed as a whole. Raise WorkerLost when killed."""
        session = self._session
        client = session.client
        assert client is not None
        done = threading.Event()
        with self._lock:
            if self._killed:
                raise WorkerLost("was stopped")
            self._done = done
        try:
            future = client.submit(_dask_side.run_batch, (session.token, spec.key), payload,
                                   data, each, spec.task_id, start, spec.item_timeout,
                                   key=session.next_key(), pure=False)
            future.add_done_callback(  # type: ignore[no-untyped-call]
                lambda _future: done.set())
            while not done.wait(HEALTH_SECONDS):
                reason = session.lost()
                if reason is not None:
                    return _fail_all(items, start, spec, reason, session.address)
            if self._killed:
                raise WorkerLost("was stopped (its Dask future was released)")
            return self._result(future, items, start, spec)
        finally:
            with self._lock:
                self._done = None

    def _result(self, future: Future[Any], items: list[Any], start: int, spec: TaskSpec
                ) -> _Reply | _Outcome:
        session = self._session
        try:
            reply, overdue, where = future.result(timeout=RESULT_TIMEOUT)
        except KilledWorker as exc:
            worker = str(getattr(exc.last_worker, "address", "?"))
            message = (f"the Dask workers evaluating items {start}..{start + len(items) - 1} "
                       f"of task {spec.task_id} died {exc.allowed_failures + 1} times, the "
                       f"last one {worker} (Dask's KilledWorker: the batch was given up)")
            errors: dict[int, BaseException] = {
                pos: WorkerDiedError(f"{message}; item {start + pos} was among them",
                                     worker=worker, task=spec.task_id, index=start + pos)
                for pos in range(len(items))}
            return [None] * len(items), errors, 0.0
        except CancelledError as exc:
            lost = session.lost() or f"its Dask future was cancelled ({exc})"
            return _fail_all(items, start, spec, lost, session.address)
        except Exception as exc:  # noqa: BLE001 - Dask could not run the batch function
            gone = session.lost()
            if gone is not None:
                return _fail_all(items, start, spec, gone, session.address)
            tb_text = "".join(traceback.format_exception(exc))
            attach_traceback(exc, f"[on the Dask cluster {session.address}]\n{tb_text}")
            return _every_item(items, exc)
        return _Reply.decode(reply, overdue, where, items, spec, start)


# -- helpers -------------------------------------------------------------------------------

def _pickle_items(items: list[Any], spec: TaskSpec, start: int, each: bool = False
                  ) -> tuple[bytes, dict[int, BaseException] | None]:
    """The batch as one pickle, or (``each``, or when that fails) as a list of per-item
    pickles with the errors of the items that cannot be pickled (None in their places)."""
    if not each:
        with contextlib.suppress(Exception):     # else find the culprits one by one
            return pickle.dumps(items, PROTOCOL), None
    blobs: list[bytes | None] = []
    errors: dict[int, BaseException] = {}
    for pos, item in enumerate(items):
        try:
            blobs.append(pickle.dumps(item, PROTOCOL))
        except Exception as exc:  # noqa: BLE001
            blobs.append(None)
            errors[pos] = SerializationError(
                f"item {start + pos} of task {spec.task_id} cannot be pickled to send it to "
                f"the Dask workers: {type(exc).__name__}: {exc}")
    return pickle.dumps(blobs, PROTOCOL), errors


def _remote_error(record: tuple[Any, ...] | None, where: str) -> BaseException:
    if record is None:           # an item this side could not pickle: never happens here
        return SerializationError("the item could not be sent to the Dask workers")
    kind, type_name, message, tb_text, blob = record
    return rebuild_error((kind, type_name, message, f"[on the Dask worker {where}]\n{tb_text}",
                          blob))


def _fail_all(items: list[Any], start: int, spec: TaskSpec, reason: str, where: str
              ) -> _Outcome:
    errors: dict[int, BaseException] = {
        pos: WorkerDiedError(f"item {start + pos} of task {spec.task_id} cannot be evaluated: "
                             f"{reason}", worker=where, task=spec.task_id, index=start + pos)
        for pos in range(len(items))}
    return [None] * len(items), errors, 0.0


def _every_item(items: list[Any], error: BaseException) -> _Outcome:
    """The outcome of a part of a batch that failed as a whole."""
    return [None] * len(items), dict.fromkeys(range(len(items)), error), 0.0


def _quietly(call: Any) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - best effort during shutdown
        log.debug("ignored error while closing a Dask session", exc_info=True)
