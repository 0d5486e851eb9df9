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

Who owns what: the session (one per run of the IMap, in ``_dask_session``) owns the
Client, the LocalCluster it made, the payload futures and the lost-scheduler flag, all
under ``_Session._lock``; each handle owns the Event its slot waits on and its killed flag
(``DaskHandle._lock``). Dask's own threads only ever set an Event.

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
import pickle
import threading
import traceback
from concurrent.futures import CancelledError
from typing import Any, NamedTuple

try:
    from distributed import Future
    from distributed.scheduler import KilledWorker
except ImportError as exc:  # distributed is an optional extra
    raise ImportError(f"IMap(worker_type='dask') needs Dask's distributed package: pip "
                      f"install 'papy[dask]' (it was not found: {exc})") from exc

from .._errors import SerializationError, WorkerDiedError, attach_traceback, rebuild_error
from .._evaluate import PROTOCOL
from . import _dask_side
from ._dask_session import _Session, dask_workers
from .base import Batch, TaskSpec, WorkerHandle, WorkerLost

__all__ = ["SLOTS_PER_THREAD", "STRIDE_PER_THREAD", "DaskHandle", "dask_workers",
           "make_dask_handles"]

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
#: a slot waiting for its batch checks the scheduler connection this often (seconds); a
#: lost connection cancels the futures at once, so this is only a safety net
HEALTH_SECONDS = 1.0
#: seconds to fetch a finished batch's results from its worker
RESULT_TIMEOUT = 120.0


def make_dask_handles(target: Any, worker_num: int, name: str) -> list[DaskHandle]:
    """Open a session on the cluster (raise WorkerStartError) and return its slots."""
    session = _Session(target, worker_num, name)
    session.open()
    count = SLOTS_PER_THREAD * worker_num
    session.leases = count
    return [DaskHandle(session, index) for index in range(count)]


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
            # distributed does not annotate Future.add_done_callback
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


