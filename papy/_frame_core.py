"""FrameCore: the loops of a Frame, one per item, many at once, their calls on its pool.

    item --> a loop: its own store (made by ``store()`` in the worker of its first call)
    loop:  start(store, first) --work--> body (papy._body, tagged with the loop) --> the
           items that leave the body --> end(store, item) --what it returns--> body ...
           nothing of the loop outstanding (in the body, in a call) --> start(store, first)
           again, with the original item; it returns None --> emit(store) downstream

    parent (FrameCore, the run's scheduler thread)      pool (FrameCall, an ordered task)
    ----------------------------------------------      ------------------------------
    one call in flight per loop at most ----request--->  ('start', store, first) or
      (the store is the loop's: calls never overlap)     ('end', store, [items]): the
    <-------------------------------------------------   user's functions; FrameStep:
                                                          (store, work, emitted or None)

A FrameCore is a stage of a body (a nested Frame: the loop's output items take the tag of
the item that started it) or the heart of a FrameNode (a Frame Piper in a run). Errors:
an error item that starts a loop is passed on, as a Piper would; an error item that leaves
the body is not given to ``end`` (counted, kept in ``error_items``; the loop goes on); a
``start``, ``end`` or ``emit`` that raises ends its loop with an error item in place of
its output (its items still in the body are dropped as they come out).
"""
from __future__ import annotations

import collections
import itertools
import time
from typing import TYPE_CHECKING, Any, Callable, cast

from imap import PushSource

from ._body import ERRORS_KEPT, Body, pool_error
from ._counters import PiperCounters
from ._errors import PapyError, PiperError, WorkerError
from ._fanout import as_items
from ._settle import error_item
from ._stores import Shipped
from ._worker import _worker_error

if TYPE_CHECKING:
    from ._frame import Frame, FrameNode
    from ._piper import Piper
    from ._run import Run
    from ._runtime import RunContext

__all__ = ["FrameCore", "FrameCall", "FrameStep"]

_START, _END = "start", "end"


class FrameStep:
    """What a call gives: the loop's store, the work to send through the body, and, when
    ``start`` returned None, the emitted items (else None)."""

    __slots__ = ("store", "work", "emitted", "seconds")

    def __init__(self, store: Any, work: list[Any], emitted: list[Any] | None,
                 seconds: float):
        self.store, self.work, self.emitted, self.seconds = store, work, emitted, seconds

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unstep, (Shipped((self.store, self.work, self.emitted)), self.seconds))


def _unstep(shipped: Shipped, seconds: float) -> FrameStep:
    store, work, emitted = shipped.value
    return FrameStep(store, work, emitted, seconds)


class FrameCall:
    """The calls of a Frame where its pool runs them; errors are returned as values."""

    __slots__ = ("start", "end", "store", "emit")

    def __init__(self, frame: Frame):
        self.start, self.end = frame.start_function, frame.end
        self.store, self.emit = frame.store, frame.emit

    def __call__(self, request: tuple[str, Shipped | None, Any]) -> FrameStep | WorkerError:
        kind, shipped, payload = request
        started = time.perf_counter()
        func: Any = self.store
        try:
            store = self.store() if shipped is None else shipped.value
            if kind == _START:
                func = self.start
                work = as_items(self.start(store, payload))
                emitted = None
                if not work:
                    func = self.emit
                    emitted = as_items(self.emit(store)) if self.emit is not None else [store]
                return FrameStep(store, work, emitted, time.perf_counter() - started)
            func = self.end
            work = []
            for item in payload:
                work += as_items(self.end(store, item))
            return FrameStep(store, work, None, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - the loop's error, as a value
            return _worker_error(exc, func, [payload])

    def call_batch(self, requests: list[Any]) -> tuple[list[Any], None]:
        return [self(request) for request in requests], None

    def __repr__(self) -> str:
        return f"FrameCall({getattr(self.start, '__name__', self.start)!r})"


class _Loop:
    __slots__ = ("id", "tag", "first", "store", "calling", "pending")

    def __init__(self, loop_id: int, tag: Any, first: Any):
        self.id, self.tag, self.first = loop_id, tag, first
        self.store: Shipped | None = None       # None until its first call made it
        self.calling = False
        self.pending: list[Any] = []            # items out of the body, for end()


class FrameCore:
    """The loops of a Frame (see the module docstring): a body stage, or a FrameNode's."""

    def __init__(self, frame: Frame, context: RunContext, owner: FrameNode | None = None):
        self.frame = self.piper = frame
        self.name = frame.name
        self.context = context
        self.owner = owner
        self.pool = frame.parallel if frame.parallel is not False else None
        self.body = Body(frame.body, context)
        self.call = FrameCall(frame)
        self.loops: dict[int, _Loop] = {}
        self.ids = itertools.count()
        self.fifo: collections.deque[int] = collections.deque()    # loop of each call sent
        self.requests: list[tuple[_Loop, tuple[str, Shipped | None, Any]]] = []
        self.dirty: set[int] = set()
        self.channel: PushSource | None = None
        self.task: Any = None
        self.tracked = None
        self.done = False
        self.broken = False         # its pool broke: a failure of the run, said once
        self.error_items: list[PapyError] = []
        frame._error_items = self.error_items       # read after the run, too
        self._counters = PiperCounters()
        self._out: list[Any] = []
        self._out_tags: list[Any] = []
        self._consumed: list[Any] = []
        self._run: Run | None = None

    # -- the node-like surface (Run.adopt: Piper.counters of a nested Frame) ------------
    @property
    def counters(self) -> PiperCounters:
        return self.owner.counters if self.owner is not None else self._counters

    def counters_of(self, piper: Piper) -> PiperCounters:
        return self.counters

    # -- wiring ----------------------------------------------------------------------------
    def add_task(self, wake: Callable[[], None]) -> None:
        if self.pool is None:
            return
        self.channel = PushSource()
        try:
            self.task = self.pool.add_task(self.call, self.channel, ordered=True)
        except Exception as exc:
            raise PiperError(f"frame {self.name!r}: cannot add its task to {self.pool!r}: "
                             f"{exc}") from exc
        self.task.notify(wake)

    def attach(self, run: Run, wake: Callable[[], None]) -> None:
        """As a body stage: adopted by the run, its pool and task, its body."""
        self._run = run
        run.adopt(self.frame, self)
        if self.pool is not None:
            run.add_pool(self.pool, self.name)
            self.add_task(wake)
        self.body.attach(run, wake)

    def detach(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.remove()
        self.body.detach()
        if self._run is not None:
            self._run.forget(self.frame)

    # -- the stage protocol ----------------------------------------------------------------
    def put(self, items: list[Any], tags: list[Any]) -> None:
        counters = self.counters
        counters.items_in += len(items)
        for item, tag in zip(items, tags, strict=True):
            if isinstance(item, PapyError):     # passed on, as a Piper would
                error = PiperError(item)
                counters.errors += 1
                self._output([error], tag)
                continue
            loop = _Loop(next(self.ids), tag, item)
            self.loops[loop.id] = loop
            self._request(loop, _START, item)

    def step(self) -> bool:
        moved = self._collect()
        moved = self.body.step() or moved
        items, tags = self.body.take()
        if items:
            moved = True
            self._from_body(items, tags)
        body = self.body
        if body.emptied:
            self.dirty.update(body.emptied)
            body.emptied.clear()
        for loop_id in self.dirty:
            loop = self.loops.get(loop_id)
            if loop is not None and not loop.calling:
                if loop.pending:
                    pending, loop.pending = loop.pending, []
                    self._request(loop, _END, pending)
                elif not body.outstanding.get(loop_id):
                    self._request(loop, _START, loop.first)
        self.dirty.clear()
        return self._dispatch() or moved

    def drain(self) -> tuple[list[Any], list[Any], list[Any]]:
        out = self._out, self._out_tags, self._consumed
        if out[2]:
            self._out, self._out_tags, self._consumed = [], [], []
            if self.owner is None:
                self.counters.items_out += len(out[0])
        return out

    def held(self) -> int:
        return len(self.loops) + self.body.held()

    def idle(self) -> bool:
        return not self.loops and not self.body.held() and not self.fifo

    def close(self) -> None:
        self.body.close()
        if self.channel is not None:
            self.channel.close()

    # -- loops -----------------------------------------------------------------------------
    def _request(self, loop: _Loop, kind: str, payload: Any) -> None:
        loop.calling = True
        self.requests.append((loop, (kind, loop.store, payload)))

    def _dispatch(self) -> bool:
        requests, self.requests = self.requests, []
        if not requests:
            return False
        if self.channel is None:        # linear: the calls run here, now
            for loop, request in requests:
                self._apply(loop, self.call(request))
            return True
        self.fifo.extend(loop.id for loop, _ in requests)
        self.channel.push_many([request for _, request in requests])
        return True

    def _collect(self) -> bool:
        task = self.task
        if task is None:
            return False
        moved = False
        while True:
            ready = task.take_ready()
            if ready is None or not ready.values:
                return moved
            moved = True
            values, errors = ready
            for position, value in enumerate(values):
                loop = self.loops.get(self.fifo.popleft())
                if loop is None:
                    continue
                if errors and position in errors:
                    value = pool_error(self, errors[position])
                self._apply(loop, value)

    def _apply(self, loop: _Loop, step: Any) -> None:
        """The result of a loop's call: its body work, or its end."""
        loop.calling = False
        if type(step) is not FrameStep:
            if isinstance(step, WorkerError):
                step = error_item(cast(Any, self), self.frame, step)    # logged, counted
            del self.loops[loop.id]
            self._output([step], loop.tag)
            return
        self.counters.time_busy += step.seconds
        loop.store = Shipped(step.store)
        if step.emitted is not None:
            del self.loops[loop.id]
            self._output(step.emitted, loop.tag)
            return
        if step.work:
            self.body.put(step.work, [loop.id] * len(step.work))
        self.dirty.add(loop.id)

    def _output(self, items: list[Any], tag: Any) -> None:
        """The output of one input item (its loop ended, or it was an error item)."""
        self._out += items
        self._out_tags += [tag] * len(items)
        self._consumed.append(tag)

    def _from_body(self, items: list[Any], tags: list[int]) -> None:
        for item, loop_id in zip(items, tags, strict=True):
            loop = self.loops.get(loop_id)
            if loop is None:
                continue            # its loop ended with an error: dropped
            if isinstance(item, PapyError):
                self.counters.errors += 1
                if len(self.error_items) < ERRORS_KEPT:
                    self.error_items.append(item)
            else:
                loop.pending.append(item)
            self.dirty.add(loop_id)
