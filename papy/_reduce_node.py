"""ReduceNode: a Reducer in a run, folding its input stream window by window.

    input rows --error items: counted, kept in error_items, never folded
        | windows: every ``every`` items / ``interval`` seconds a new store (one window
        | without either); the items of a window, tagged with it:
        v
    body (papy._body: the stages of the reducer's scope; none by default)
        v
    FoldCall in the pool (an ordered IMap task; items cross as items, the IMap makes the
        batches): a fresh store per run of same-window items of a batch, folded as
        fold(store, works, []); one ``Folded`` (partial store, what fold returned) per run
        v
    parent: fold(window store, [], [partial]) --> what fold returned (in the worker or here)
        is recurred: back into the body with the window's tag (or folded again)
        v
    a window whose input is complete and with nothing outstanding (no item waiting, in
    the pool or in the body): emit(store) downstream (a Multiple: several items), in
    window order

Memory: a Reducer holds its window stores and the items in flight only (the run admits
inputs below its window), so an endless input into ``Reducer(..., every=n)`` runs in flat
memory. A fold that raises is retried item by item on a fresh store (the item that raises
is an error item, the others are folded); a merge that raises loses that partial store (an
error item). The FIFO of the items' windows (``sent``) never leaves the parent: a
``_Cut`` marks the first item of each run of one window in the task's input, so that the
worker never folds two windows into one store.
"""
from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any, Callable

from imap import PushSource

from ._body import ERRORS_KEPT, Body, pool_error
from ._errors import PapyError, PiperError
from ._fanout import as_items
from ._nodes import Node
from ._reduce_fold import FoldCall, Folded, _Cut
from ._settle import PLAIN, error_item
from ._worker import _worker_error

if TYPE_CHECKING:
    from ._channels import Pipe
    from ._piper import Piper
    from ._reduce import Reducer
    from ._run import Run
    from ._runtime import RunContext

__all__ = ["ReduceNode"]


class _Window:
    __slots__ = ("index", "store", "taken", "open", "deadline", "waiting", "in_flight")

    def __init__(self, index: int, deadline: float | None):
        self.index, self.deadline = index, deadline
        self.store: Any = None          # made by the first merge (or the emit)
        self.taken = 0                  # input items it took
        self.open = True                # takes input items
        self.waiting: list[Any] = []    # items to fold, not sent yet
        self.in_flight = 0              # items in the fold task


class ReduceNode(Node):
    """The node of a Reducer in a run (the Node contract: step/held/done/outputs/outlet)."""

    def __init__(self, pipers: tuple[Piper, ...], inputs: list[Pipe], context: RunContext,
                 stage_inputs: tuple[tuple[int, ...], ...] | None = None):
        super().__init__(pipers, inputs, context, stage_inputs)
        reducer: Reducer = self.piper  # type: ignore[assignment]  # a Reducer's node
        self.reducer = reducer
        self.fold_call = FoldCall(reducer.fold, reducer.store)
        self.body = Body(reducer.body, context) if reducer.body else None
        self.windows: dict[int, _Window] = {}
        self.current: _Window | None = None     # the window that takes input items
        self.opened = 0
        self.sent: collections.deque[list[int]] = collections.deque()   # [window, items]
        self.last_sent: int | None = None
        self.input_ended = False
        self.error_items: list[PapyError] = []
        reducer._error_items = self.error_items     # read after the run, too
        self.run: Run | None = None

    # -- wiring ----------------------------------------------------------------------------
    def add_task(self, wake: Callable[[], None]) -> None:
        assert self.imap is not None
        self.channel = PushSource()
        try:
            self.task = self.imap.add_task(self.fold_call, self.channel, ordered=True)
        except Exception as exc:
            raise PiperError(f"reducer {self.name!r}: cannot add its task to {self.imap!r}: "
                             f"{exc}") from exc
        self.task.notify(wake)

    def attach(self, run: Run) -> None:
        self.run = run
        if self.body is not None:
            try:
                self.body.attach(run, run.wakeup.poke)
            except BaseException:
                self.remove_task()
                raise

    def remove_task(self) -> None:
        super().remove_task()
        if self.body is not None:
            self.body.detach()

    # -- one step --------------------------------------------------------------------------
    def held(self) -> int:
        held = sum(pipe.count for pipe in self.inputs) + self.in_flight
        return held + (self.outlet.count if self.outlet is not None else 0)

    def wake_at(self) -> float | None:
        """When the window that takes input items closes (``interval``), or None."""
        current = self.current
        return current.deadline if current is not None else None

    def step(self) -> bool:
        if self.done:
            return False
        moved = self._collect_folds()
        body = self.body
        if body is not None:
            moved = body.step() or moved
            items, tags = body.take()
            if items:
                moved = True
                self._from_body(items, tags)
        moved = self._take_inputs() or moved
        if self.inputs_done and not self.input_ended:
            self._end_of_input()
        moved = self._send() or moved
        moved = self._emit_ready() or moved
        self.in_flight = sum(len(w.waiting) + w.in_flight for w in self.windows.values()) + (
            body.held() if body is not None else 0)
        if self.inputs_done and not self.windows:
            if body is not None:
                body.close()
            if self.channel is not None:
                self.channel.close()
            self._finish()
            moved = True
        return moved

    def _take_inputs(self) -> bool:
        current = self.current
        if current is not None and current.deadline is not None and \
                time.monotonic() >= current.deadline:
            self._close_current()
        if self.inputs_done:
            return False
        rows = self._rows()
        if rows is None:
            return False
        if rows and not PLAIN.issuperset(map(type, rows)):
            rows = self._without_errors(rows)
        every = self.reducer.every
        while rows:
            window = self._current()
            room = every - window.taken if every is not None else len(rows)
            part, rows = (rows[:room], rows[room:]) if room < len(rows) else (rows, [])
            window.taken += len(part)
            if every is not None and window.taken >= every:
                self._close_current()
            self._enter(window, part)
        return True

    def _end_of_input(self) -> None:
        """The input ended: its last window is complete (an input without any item and
        without windows gives one empty store, emitted)."""
        self.input_ended = True
        if self.opened == 0 and self.reducer.every is None and self.reducer.interval is None:
            self._current()
        self._close_current()

    def _current(self) -> _Window:
        window = self.current
        if window is None:
            interval = self.reducer.interval
            deadline = time.monotonic() + interval if interval is not None else None
            window = self.current = self.windows[self.opened] = _Window(self.opened, deadline)
            self.opened += 1
        return window

    def _close_current(self) -> None:
        if self.current is not None:
            self.current.open = False
            self.current = None

    def _without_errors(self, items: list[Any]) -> list[Any]:
        kept = []
        for item in items:
            if isinstance(item, PapyError):
                self._absorb(item)
            else:
                kept.append(item)
        return kept

    def _absorb(self, error: PapyError) -> None:
        """An error item reached the fold: counted and kept, never folded."""
        self.counters.errors += 1
        self._keep(error)

    def _keep(self, error: PapyError) -> None:
        if len(self.error_items) < ERRORS_KEPT:
            self.error_items.append(error)

    def _enter(self, window: _Window, items: list[Any]) -> None:
        """Items of ``window`` (input or recurred): through the body, or to the fold."""
        if not items:
            return
        if self.body is not None:
            self.body.put(items, [window.index] * len(items))
        else:
            window.waiting += items

    def _from_body(self, items: list[Any], tags: list[int]) -> None:
        if not PLAIN.issuperset(map(type, items)):
            pairs = [(i, t) for i, t in zip(items, tags, strict=True)
                     if not isinstance(i, PapyError)]
            for item in items:
                if isinstance(item, PapyError):
                    self._absorb(item)
            items, tags = [i for i, _ in pairs], [t for _, t in pairs]
        if not items:
            return
        if tags[0] == tags[-1] and len(set(tags)) == 1:
            self.windows[tags[0]].waiting += items
            return
        for item, tag in zip(items, tags, strict=True):
            self.windows[tag].waiting.append(item)

    # -- folding ---------------------------------------------------------------------------
    def _send(self) -> bool:
        moved = False
        for window in list(self.windows.values()):
            items = window.waiting
            if not items:
                continue
            moved = True
            window.waiting = []
            if self.channel is None:        # linear: folded here, now
                values, _ = self.fold_call.call_batch(items)
                self.counters.time_busy += values[-1].seconds
                self._merge(window, values[-1])
                continue
            if self.last_sent != window.index:
                items = [_Cut(items[0])] + items[1:]
                self.last_sent = window.index
            window.in_flight += len(items)
            sent = self.sent
            if sent and sent[-1][0] == window.index:
                sent[-1][1] += len(items)
            else:
                sent.append([window.index, len(items)])
            self.channel.push_many(items)
        return moved

    def _collect_folds(self) -> bool:
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
            position, count = 0, len(values)
            while position < count:
                entry = self.sent[0]
                window = self.windows[entry[0]]
                size = min(entry[1], count - position)
                self._results(window, values, errors, position, position + size)
                window.in_flight -= size
                if size == entry[1]:
                    self.sent.popleft()
                else:
                    entry[1] -= size
                position += size

    def _results(self, window: _Window, values: list[Any],
                 errors: dict[int, BaseException] | None, begin: int, end: int) -> None:
        if errors:
            for position, exc in errors.items():
                if begin <= position < end:
                    self._keep(pool_error(self, exc))
        for folded in values[begin:end]:
            if folded is not None:
                self.counters.time_busy += folded.seconds
                self._merge(window, folded)

    def _merge(self, window: _Window, folded: Folded) -> None:
        if folded.errors:
            for error in folded.errors.values():      # logged and counted there
                self._keep(error_item(self, self.piper, error))
        if folded.store is None:
            return                  # its store() raised: nothing was folded
        returned: Any = None
        try:
            if window.store is None:
                window.store = self._new_store()
            returned = self.reducer.fold(window.store, [], [folded.store])
        except Exception as exc:  # noqa: BLE001 - that partial store is lost: an error item
            self._keep(error_item(self, self.piper, _worker_error(exc, self.reducer.fold,
                                                                  [folded.store])))
        self._enter(window, folded.recurred + as_items(returned))

    def _new_store(self) -> Any:
        return self.reducer.store()

    # -- emitting --------------------------------------------------------------------------
    def _emit_ready(self) -> bool:
        """Emit the windows that are done, oldest first (a window waits for older ones)."""
        moved = False
        body = self.body
        while self.windows:
            window = next(iter(self.windows.values()))
            if window.open or window.waiting or window.in_flight or (
                    body is not None and body.outstanding.get(window.index)):
                return moved
            del self.windows[window.index]
            moved = True
            emit = self.reducer.emit
            store = window.store
            try:
                if store is None:
                    store = self._new_store()
                items = as_items(emit(store)) if emit is not None else [store]
            except Exception as exc:  # noqa: BLE001 - the window's result is an error item
                failed = emit if store is not None and emit is not None else self.reducer.store
                items = [error_item(self, self.piper, _worker_error(exc, failed, [store]))]
            if items:
                self._give(items)
        return moved

    def abort(self) -> None:
        super().abort()
        self.windows.clear()
        self.current = None
        if self.body is not None:
            self.body.close()
