"""Thread workers: the slot thread evaluates the batch itself, no pickling.

With an ``item_timeout`` each item runs in a helper thread the slot waits for; an item that
runs too long is abandoned (threads cannot be killed): its helper thread finishes it in the
background, its result is dropped, and the next items get a fresh helper thread.
"""
from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from .._errors import attach_traceback
from .._evaluate import evaluate, evaluate_tracked, make_call
from .base import Batch, WorkerHandle


class ThreadHandle(WorkerHandle):
    """Evaluates batches in the calling (slot) thread."""

    def __init__(self, index: int) -> None:
        self.name = f"thread {index}"
        self._calls: dict[int, Callable[[Any], Any]] = {}
        self._progress = [-1, 0]
        self._runner: _Runner | None = None

    def open(self) -> None:
        self._calls.clear()

    def run(self, batch: Batch) -> tuple[list[Any], dict[int, BaseException] | None, float]:
        spec = batch.task
        call = self._calls.get(spec.key)
        if call is None:
            call = self._calls[spec.key] = make_call(spec.func, spec.args, spec.kwargs)
        if spec.item_timeout is not None:
            values, errors, elapsed = self._run_with_timeout(call, batch)
        elif batch.tracked:
            values, errors, elapsed = evaluate_tracked(call, batch.items, self._progress)
        else:
            values, errors, elapsed = evaluate(call, batch.items)
        if errors:
            for exc in errors.values():
                if exc.__traceback__ is not None:
                    attach_traceback(exc, "".join(traceback.format_exception(exc)))
        return values, errors, elapsed

    def _run_with_timeout(self, call: Callable[[Any], Any], batch: Batch
                          ) -> tuple[list[Any], dict[int, BaseException] | None, float]:
        limit = batch.task.item_timeout
        assert limit is not None            # the caller runs items this way only with one
        started = time.perf_counter()
        values: list[Any] = []
        errors: dict[int, BaseException] | None = None
        for position, item in enumerate(batch.items):
            if self._runner is None:
                self._runner = _Runner(f"{self.name}-runner")
            try:
                ok, value = self._runner.call(call, item, limit)
            except queue.Empty:
                self._runner.abandon()
                self._runner = None
                ok, value = False, TimeoutError(
                    f"item {batch.start + position} of task {batch.task.task_id} ran longer "
                    f"than its item_timeout of {limit} s; it was abandoned (a thread cannot "
                    f"be stopped) and goes on in the background")
            if not ok:
                errors = errors or {}
                errors[position] = value
                value = None
            values.append(value)
        return values, errors, time.perf_counter() - started

    def close(self) -> None:
        self._calls.clear()
        if self._runner is not None:
            self._runner.abandon()
            self._runner = None


class _Runner:
    """A helper thread evaluating one item at a time for a slot with an item_timeout."""

    def __init__(self, name: str) -> None:
        # (call, item), or None: exit
        self._requests: queue.SimpleQueue[tuple[Callable[[Any], Any], Any] | None] = \
            queue.SimpleQueue()
        # (True, value) or (False, the exception)
        self._replies: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=name)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            call, item = request
            try:
                self._replies.put((True, call(item)))
            except BaseException as exc:  # noqa: BLE001 - the item's error, in place
                self._replies.put((False, exc))

    def call(self, call: Callable[[Any], Any], item: Any, timeout: float) -> tuple[bool, Any]:
        """(ok, value) of call(item); queue.Empty when it did not return within timeout."""
        self._requests.put((call, item))
        return self._replies.get(timeout=timeout)

    def abandon(self) -> None:
        """The thread exits once its current item (if any) returns."""
        self._requests.put(None)
