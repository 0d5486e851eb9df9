"""Thread workers: the slot thread evaluates the batch itself, no pickling."""
from __future__ import annotations

import traceback

from .._errors import attach_traceback
from .._evaluate import evaluate, evaluate_tracked, make_call
from .base import Batch, WorkerHandle


class ThreadHandle(WorkerHandle):
    """Evaluates batches in the calling (slot) thread.

    A thread cannot be killed: ``kill`` only marks it, and an item that never returns keeps
    its thread busy (the IMap abandons it at stop; it is a daemon thread).
    """

    def __init__(self, index: int):
        self.name = f"thread {index}"
        self._calls: dict = {}
        self._progress = [-1]

    def open(self) -> None:
        self._calls.clear()

    def run(self, batch: Batch):
        spec = batch.task
        call = self._calls.get(spec.key)
        if call is None:
            call = self._calls[spec.key] = make_call(spec.func, spec.args, spec.kwargs)
        if batch.tracked:
            values, errors, elapsed = evaluate_tracked(call, batch.items, self._progress)
        else:
            values, errors, elapsed = evaluate(call, batch.items)
        if errors:
            for exc in errors.values():
                attach_traceback(exc, "".join(traceback.format_exception(exc)))
        return values, errors, elapsed

    def close(self) -> None:
        self._calls.clear()
