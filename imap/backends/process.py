"""Process workers: one local process per slot, behind a duplex pipe (the parent's side;
the worker's loop is in ``_process_worker.py``, how a worker starts and ends in
``_process_lifecycle.py``). This module runs batches.

    slot thread (parent)                          worker process (worker_main)
    start the process, wait for   <--pipe--       'hello' once it is ready
    ('task', key) + dill payload   --pipe-->      load the function once per task
    ('batch', key, task, start, tracked) + items --> evaluate the items
                                   <--pipe--      reply: (values, error records, elapsed)
    'exit'                         --pipe-->      return

A message to a worker is two byte frames (``send_bytes``): a pickled header, then for a task
or a batch the payload, so items are pickled once, by the slot thread, with protocol 5; a
reply is one frame: (shared-memory descriptor or None, pickled reply).

Death: the slot waits on the pipe *and* the process sentinel, so a worker that exits,
crashes or is killed is noticed at once, without polling. The worker writes into a small
shared array (``progress``) the position of the item it evaluates (tracked batches), BUSY
while it handles any batch, and -1 when idle: a death is blamed on that item, on the batch,
or on nothing (a death before the batch began: it is run again as it is).
"""
from __future__ import annotations

import pickle
import time
from multiprocessing import connection
from typing import Any, cast

from .. import _evaluate
from .._errors import rebuild_error
from .._evaluate import PROTOCOL
from ._process_lifecycle import ProcessLifecycle, _died_with_its_server, describe_exit
from ._process_worker import IDLE
from .base import Batch, WorkerLost


class ProcessHandle(ProcessLifecycle):
    """A local worker process (its start, close and kill: ``ProcessLifecycle``)."""

    def run(self, batch: Batch) -> tuple[list[Any], dict[int, BaseException] | None, float]:
        spec = batch.task
        if spec.key not in self._loaded:
            self._loading = spec.task_id
            self._send(pickle.dumps(("task", spec.key, spec.task_id), PROTOCOL),
                       spec.payload or b"")
            self._loaded.add(spec.key)
        try:
            payload = self._dumps(batch.items)
        except Exception:  # noqa: BLE001 - find the items that cannot be pickled
            return self._run_split(batch, reason="pickle")
        try:
            values, records, elapsed = self._round_trip(batch, payload)
        except _UnreadableReplyError:  # a result cannot be unpickled here: find it, alone
            return self._run_split(batch, reason="reply")
        if values is None:  # the worker could not unpickle the batch
            return self._run_split(batch, reason="unpickle")
        return values, _rebuild(records), elapsed

    def _run_split(self, batch: Batch, reason: str
                   ) -> tuple[list[Any], dict[int, BaseException] | None, float]:
        """Slow path: send the items one by one so a bad one fails alone, in place."""
        values, errors, elapsed = [None] * len(batch.items), {}, 0.0
        for position, item in enumerate(batch.items):
            index = batch.start + position
            try:
                payload = self._dumps([item])
            except Exception as exc:  # noqa: BLE001
                errors[position] = rebuild_error(_evaluate.serialization_record(
                    f"item {index} of task {batch.task.task_id} cannot be pickled", exc))
                continue
            single = Batch(batch.task, index, [item], tracked=True)
            try:
                item_values, records, seconds = self._round_trip(single, payload)
            except WorkerLost as lost:
                raise WorkerLost(lost.message, position, lost.exitcode, lost.timed_out) from None
            except _UnreadableReplyError as unreadable:
                errors[position] = rebuild_error(_evaluate.serialization_record(
                    f"the result of item {index} of task {batch.task.task_id} cannot be "
                    f"unpickled here",   # raised "from" the unpickling error (_round_trip):
                    cast(BaseException, unreadable.__cause__)))
                continue
            elapsed += seconds
            if item_values is None:
                errors[position] = rebuild_error(records[-1])
                continue
            values[position] = item_values[0]
            if records:
                errors[position] = rebuild_error(records[0])
        return values, errors or None, elapsed

    def _dumps(self, items: list[Any]) -> tuple[bytes, Any]:
        """Pickle a batch: ``(data, shared-memory descriptor or None)``."""
        if self._writer is None:
            return pickle.dumps(items, PROTOCOL), None
        return self._writer.dumps(items)

    def _round_trip(self, batch: Batch, payload: tuple[bytes, Any]) -> Any:
        data, descriptor = payload
        header = ("batch", batch.task.key, batch.task.task_id, batch.start, batch.tracked,
                  descriptor)
        self._progress[0] = -1
        self._send(pickle.dumps(header, PROTOCOL), data)
        reply_descriptor, reply = pickle.loads(self._receive(batch))
        self._loading = None
        batch.nbytes += _size(data, descriptor) + _size(reply, reply_descriptor)
        try:
            return self._reader.loads(reply, reply_descriptor)
        except Exception as exc:
            raise _UnreadableReplyError() from exc

    def _send(self, header: bytes, payload: bytes) -> None:
        try:
            self._conn.send_bytes(header)
            self._conn.send_bytes(payload)
        except (OSError, ValueError, AttributeError):
            raise self._lost(None) from None

    def _receive(self, batch: Batch) -> bytes:
        conn, process = self._conn, self._process
        if conn is None:
            raise self._lost(batch)
        limit = batch.task.item_timeout
        while True:
            ready = connection.wait([conn, process.sentinel], self._until_overdue(limit))
            if conn in ready:
                try:
                    data: bytes = conn.recv_bytes()
                    return data
                except (EOFError, OSError):
                    raise self._lost(batch) from None
            if process.sentinel in ready:
                if not conn.poll():
                    raise self._lost(batch)
                continue
            if self._until_overdue(limit) == 0:   # the current item ran past item_timeout
                position = self._progress[0]
                process.kill()
                process.join()
                raise WorkerLost(f"was killed after item {batch.start + position} ran longer "
                                 f"than {limit} s", position, process.exitcode, timed_out=True)

    def _until_overdue(self, limit: float | None) -> float | None:
        """Seconds until the item being evaluated exceeds ``limit`` (0: it did; None: no
        limit, or no item is running yet)."""
        if limit is None or self._progress[0] < 0:
            return None if limit is None else limit
        running = (time.monotonic_ns() - self._progress[1]) / 1e9
        return max(0.0, limit - float(running))

    def _lost(self, batch: Batch | None) -> WorkerLost:
        """What is known of a worker that just died: how, and in which item, if any."""
        process = self._process
        exitcode, server_died = None, False
        if process is not None:
            process.join(1.0)
            exitcode = process.exitcode
            server_died = _died_with_its_server(process, exitcode, self._server_pid)
        progress = self._progress[0] if self._progress is not None else IDLE
        position = progress if batch is not None and batch.tracked and progress >= 0 else None
        before_work = progress == IDLE
        if server_died:
            message = "was killed with its fork server, which died"
        else:
            message = describe_exit(exitcode)
            if before_work and self._loading is not None:
                message += f" while loading the function of task {self._loading}"
        return WorkerLost(message, position, exitcode, before_work=before_work,
                          server_died=server_died)


class _UnreadableReplyError(Exception):
    """The worker's reply could not be unpickled in this process (the cause is chained)."""


def _size(data: bytes, descriptor: Any) -> int:
    """Bytes moved by one message: the pickle plus what went through shared memory."""
    if descriptor is None:
        return len(data)
    return len(data) + sum(int(span[1]) for span in descriptor[1])


def _rebuild(records: dict[int, tuple[Any, ...]] | None) -> dict[int, BaseException] | None:
    if not records:
        return None
    return {position: rebuild_error(record) for position, record in records.items()}
