"""What runs on a Dask worker: one call per batch (``imap.backends.dask`` has the picture).

    run_batch(call_key, payload, data, each, task_id, start, item_timeout)
        payload   the task's dill payload (the result of ``hold``, a dependency that Dask
                  fetches once per worker); loaded once per worker process and cached by
                  ``call_key`` (the session's token and the task's key)
        data      pickle.dumps(items), or with ``each`` a pickled list of per-item pickles
                  (None where an item could not be pickled by the client)
        returns   (reply, overdue, where): ``reply`` is the process backend's reply
                  (``imap._evaluate``: values, error records, elapsed); ``overdue`` is None,
                  or the position of an item that ran past ``item_timeout`` (``reply`` then
                  covers the items up to it and the items after it were not evaluated);
                  ``where`` is this worker's address, for tracebacks and messages
    probe()   the worker's (Python minor version, dill version), checked at start

Dask runs these functions in its worker threads (several per process); the cache of loaded
functions is shared by them under a lock. The module needs imap (``pip install 'papy[dask]'``)
and dill on the workers; it imports nothing from imap but ``_evaluate``.
"""
from __future__ import annotations

import collections
import pickle
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import _evaluate
from .._evaluate import PROTOCOL

#: loaded task functions kept per worker process (least recently used ones are dropped: the
#: payload comes with every batch, so a dropped one is simply loaded again)
CACHE_SIZE = 64

_calls: collections.OrderedDict[tuple[str, int], Callable[[Any], Any]] = \
    collections.OrderedDict()
_calls_lock = threading.Lock()

Reply = tuple[bytes, "int | None", str]


def hold(payload: bytes) -> bytes:
    """The task whose result is a task's function payload (see DaskHandle)."""
    return payload


def probe() -> tuple[str, str]:
    """This worker's Python minor version and dill version."""
    import dill
    return f"{sys.version_info[0]}.{sys.version_info[1]}", str(dill.__version__)


def run_batch(call_key: tuple[str, int], payload: bytes, data: bytes, each: bool,
              task_id: int, start: int, item_timeout: float | None) -> Reply:
    """Evaluate one batch (see the module docstring). Never raises for an item."""
    where = _worker_address()
    items, records = _decode(data, each, task_id, start, where)
    if items is None:             # the whole batch cannot be unpickled: the client splits it
        return pickle.dumps((None, records, 0.0), PROTOCOL), None, where
    try:
        call = _load(call_key, payload)
    except BaseException as exc:  # noqa: BLE001 - every item's error, in place
        record = _evaluate.error_record(
            exc, "exception" if isinstance(exc, ImportError) else "serialization",
            f"the function of task {task_id} cannot be loaded on the Dask worker {where}: "
            f"{type(exc).__name__}: {exc}")
        reply = pickle.dumps(([None] * len(items), dict.fromkeys(range(len(items)), record),
                              0.0), PROTOCOL)
        return reply, None, where
    if not records:
        values, errors, elapsed, overdue = _evaluate_items(call, items, item_timeout)
        return _evaluate.encode_reply(values, errors, elapsed, task_id, start), overdue, where
    # some items are missing (not pickled by the client, or not unpickled here): evaluate
    # the others and put their results back in their places
    good = [position for position in range(len(items)) if position not in records]
    values, errors, elapsed, overdue = _evaluate_items(call, [items[p] for p in good],
                                                       item_timeout)
    placed: list[Any] = [None] * len(items)
    # values stop at an overdue item (the items after it are not evaluated): not strict
    for value, position in zip(values, good, strict=False):
        placed[position] = value
    placed_errors = {good[k]: exc for k, exc in (errors or {}).items()}
    if overdue is not None:       # the items after it are left to the client
        overdue = good[overdue]
        placed = placed[:overdue + 1]
        records = {p: r for p, r in records.items() if p < overdue}
    reply = _evaluate.encode_reply(placed, placed_errors or None, elapsed, task_id, start)
    values, encoded, elapsed = pickle.loads(reply)
    return (pickle.dumps((values, {**(encoded or {}), **records}, elapsed), PROTOCOL),
            overdue, where)


def _evaluate_items(call: Callable[[Any], Any], items: list[Any], limit: float | None
                    ) -> tuple[list[Any], dict[int, BaseException] | None, float, int | None]:
    if limit is None:
        values, errors, elapsed = _evaluate.evaluate(call, items)
        return values, errors, elapsed, None
    return evaluate_limited(call, items, limit)


def evaluate_limited(call: Callable[[Any], Any], items: list[Any], limit: float
                     ) -> tuple[list[Any], dict[int, BaseException] | None, float, int | None]:
    """Evaluate the items one by one in a helper thread, waiting at most ``limit`` seconds
    for each; return ``(values, errors, elapsed, overdue)``.

    A Dask worker cannot stop a running task, so an item that runs too long is abandoned:
    its helper thread finishes it in the background (its result is dropped) and evaluates
    nothing more; ``overdue`` is its position, ``values`` ends with it (None, and its
    TimeoutError is in ``errors``); the items after it are left to the caller.
    """
    replies: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
    abandoned = threading.Event()

    def evaluate_items() -> None:
        for item in items:
            if abandoned.is_set():
                return
            try:
                replies.put((True, call(item)))
            except BaseException as exc:  # noqa: BLE001 - the item's error, in place
                replies.put((False, exc))

    started = time.perf_counter()
    helper = threading.Thread(target=evaluate_items, daemon=True, name="imap-dask-item")
    helper.start()
    values: list[Any] = []
    errors: dict[int, BaseException] | None = None
    for position in range(len(items)):
        try:
            ok, value = replies.get(timeout=limit)
        except queue.Empty:
            abandoned.set()
            values.append(None)
            errors = errors or {}
            errors[position] = TimeoutError(
                f"the item ran longer than its item_timeout of {limit} s on the Dask worker "
                f"{_worker_address()}; it was abandoned (Dask cannot stop a running task): it "
                f"goes on in a background thread of that worker and its result is dropped")
            return values, errors, time.perf_counter() - started, position
        if not ok:
            errors = errors or {}
            errors[position] = value
            value = None
        values.append(value)
    helper.join()
    return values, errors, time.perf_counter() - started, None


def _load(call_key: tuple[str, int], payload: bytes) -> Callable[[Any], Any]:
    with _calls_lock:
        cached = _calls.get(call_key)
        if cached is not None:
            _calls.move_to_end(call_key)
            return cached
    call = _evaluate.load_function(payload)   # outside the lock
    with _calls_lock:
        _calls[call_key] = call
        while len(_calls) > CACHE_SIZE:
            _calls.popitem(last=False)
    return call


def _decode(data: bytes, each: bool, task_id: int, start: int, where: str
            ) -> tuple[list[Any] | None, dict[int, tuple[Any, ...] | None] | None]:
    """(items, error records of the items that are missing); items is None (with the
    record at position -1) when the whole batch cannot be unpickled. An item the client
    could not pickle is missing with the record None: the client has its error."""
    if not each:
        try:
            return pickle.loads(data), None
        except Exception as exc:  # noqa: BLE001
            return None, {-1: _evaluate.serialization_record(
                f"the batch at item {start} of task {task_id} cannot be unpickled on the Dask "
                f"worker {where}", exc)}
    items: list[Any] = []
    records: dict[int, tuple[Any, ...] | None] = {}
    for position, blob in enumerate(pickle.loads(data)):
        if blob is None:          # the client could not pickle it: its error is there
            items.append(None)
            records[position] = None
            continue
        try:
            items.append(pickle.loads(blob))
        except Exception as exc:  # noqa: BLE001
            items.append(None)
            records[position] = _evaluate.serialization_record(
                f"item {start + position} of task {task_id} cannot be unpickled on the Dask "
                f"worker {where}", exc)
    return items, records or None


def _worker_address() -> str:
    try:
        from distributed import get_worker
        return str(get_worker().address)
    except (ImportError, ValueError):
        return "(not in a Dask worker)"
