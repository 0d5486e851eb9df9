"""A node of a run: one Piper (or a fused chain of Pipers) and what it does to batches.

Every step below runs in the run's scheduler thread and moves whole batches:

    input Pipes (one per input, join order)
        |  rows: a strict zip of the inputs (a join), or the items (one input)
        |  consume: n rows per inbox, stride-interleaved (blocks of n x stride rows)
        v
    inboxes --linear: call.call_batch() here, in bounded chunks ----------------+
            --pool: PushSource.push_many() --> IMap task --> take_ready() (collect) -----+
                                                                                v
    settle (papy._settle), fan-out (papy._fanout: a Multiple, a dropped None)
        --> produce: n items per result, stride-interleaved --> emit
        --> every downstream Pipe (a fan-out shares the batch), or the Outlet of an output

A node with ``spawn > 1`` still has one IMap task: its inboxes are evaluated by every
worker of the pool already, and the stream transformations (consume, produce) are done
here, so the results are those of the original's spawned copies.
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from imap import PushSource

from ._cache_run import cache_counts_of
from ._channels import Outlet, Pipe
from ._counters import LinkedCounters, OutputCounters, PiperCounters
from ._errors import PiperError, _short_repr
from ._fanout import fan_out
from ._fuse import FusedCall
from ._settle import settle
from ._timed import BoxingCall, TimedCall

if TYPE_CHECKING:
    from imap import TaskIterator

    from ._piper import Piper
    from ._runtime import RunContext

log = logging.getLogger(__name__)

__all__ = ["Node"]

#: a linear node evaluates its inboxes in chunks aiming at this many seconds each, so a
#: slow linear Worker never keeps the scheduler from the other nodes for long
LINEAR_CHUNK_SECONDS = 0.005
_GAP = object()


class Node:
    """``pipers``: the Piper, or a fused group (in topological order: the head, which reads
    the node's inputs, first; the exit, which owns the node, last); ``stage_inputs``: for a
    fused group, the stages each stage reads (default: a chain)."""

    def __init__(self, pipers: tuple[Piper, ...], inputs: list[Pipe], context: RunContext,
                 stage_inputs: tuple[tuple[int, ...], ...] | None = None):
        self.pipers = pipers
        self.head, self.piper = pipers[0], pipers[-1]
        self.name = self.piper.name
        self.inputs = inputs
        self.context = context
        self.fused = len(pipers) > 1
        # fused: the stages each stage reads (a chain unless the plan says otherwise)
        self.stage_inputs = stage_inputs or ((),) + tuple((k,) for k in range(len(pipers) - 1))
        self.imap = self.piper.parallel if self.piper.parallel is not False else None
        self.stride = self.piper.stride
        self.outputs: list[Pipe] = []
        self.outlet: Outlet | None = None
        self.counters: PiperCounters = PiperCounters()
        self._counters: dict[int, PiperCounters] = {id(self.piper): self.counters}
        for k, piper in enumerate(pipers[:-1]):
            self._counters[id(piper)] = LinkedCounters(self.counters, first=k == 0)
        self.tracked: dict[int, Any] | None = {} if self.piper.track else None
        self.cache_counts = cache_counts_of(pipers)     # cached Pipers' records
        self.settled = 0            # results settled so far (the tracking index)
        self.boxed = len(inputs) == 1 and self.head.consume == 1
        workers = [p.worker for p in pipers]
        drops = tuple(p.drop_none for p in pipers)
        self.call: Any = (FusedCall(workers, self.boxed, self.stage_inputs, drops) if self.fused
                          else BoxingCall(workers[0]) if self.boxed else TimedCall(workers[0]))
        self.fanned = False         # settle saw a Multiple in the batch: fan it out
        self.rows: list[Any] = []   # consume > 1: rows waiting for a whole block
        self.made: list[Any] = []   # produce > 1: results waiting for a whole block
        self.mismatch: PiperError | None = None
        self.broken = False         # its pool broke: a failure of the run, said once
        self.input_names: list[str] = []     # upstream Piper names, or 'input k'
        self.inputs_done = False
        self.done = False
        # pool side
        self.channel: PushSource | None = None
        self.task: TaskIterator[Any] | None = None
        self.in_flight = 0
        self.task_done = self.imap is None
        # linear side: chunk size adapted to the time per inbox
        self.chunk = 64

    # -- wiring (by the run, before it starts) ---------------------------------------------
    def counters_of(self, piper: Piper) -> PiperCounters:
        return self._counters[id(piper)]

    def make_output(self, outlet: Outlet) -> None:
        """This node has no downstream node: its results go to ``outlet``."""
        self.outlet = outlet
        counters = OutputCounters()
        self._counters[id(self.piper)] = self.counters = counters
        for piper in self.pipers[:-1]:
            self._counters[id(piper)] = LinkedCounters(counters, first=piper is self.head)

    def add_task(self, wake: Callable[[], None]) -> None:
        """Pool node: add the IMap task that evaluates the inboxes pushed to its PushSource."""
        assert self.imap is not None
        self.channel = PushSource()
        try:
            self.task = self.imap.add_task(self.call, self.channel,
                                           item_timeout=self.piper.timeout)
        except Exception as exc:
            raise PiperError(f"piper {self.name!r}: cannot add its task to {self.imap!r}: "
                             f"{exc}") from exc
        self.task.notify(wake)

    def remove_task(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.remove()

    # -- one step of the scheduler ---------------------------------------------------------
    def held(self) -> int:
        """Items this node holds: inputs waiting, rows and results in blocks, in its pool."""
        held = sum(pipe.count for pipe in self.inputs) + len(self.rows) + len(self.made)
        return held + self.in_flight + (self.outlet.count if self.outlet is not None else 0)

    def step(self) -> bool:
        """Move what can be moved now; True when something moved."""
        if self.done:
            return False
        moved = self._collect() if self.imap is not None else False
        moved = self._feed() or moved
        if self.inputs_done and self.task_done and not self.done:
            self._finish()
            moved = True
        return moved

    def _feed(self) -> bool:
        if self.inputs_done:
            return False
        rows = self._rows()
        if rows is None:
            return False
        inboxes = self._group(rows)
        if self.inputs_done:
            inboxes += self._group_tail()  # type: ignore[unreachable]  # _rows() set it
        if self.imap is None:
            if inboxes:
                self._evaluate_linear(inboxes)
        else:
            channel = self.channel
            assert channel is not None
            if inboxes:
                self.in_flight += len(inboxes)
                channel.push_many(inboxes)
            if self.inputs_done:
                channel.close()  # type: ignore[unreachable]  # _rows() set it
        return True

    def _rows(self) -> list[Any] | None:
        """The rows ready now (None: nothing moved). Sets ``inputs_done`` at their end."""
        inputs = self.inputs
        if len(inputs) == 1:
            pipe = inputs[0]
            if pipe.ended:
                self.inputs_done = True
                return []
            if not pipe.count:
                return None
            items = pipe.take(self._wanted(pipe.count))
            if pipe.ended:
                self.inputs_done = True  # type: ignore[unreachable]  # take() set it
            self._count_in(len(items))
            return items if self.boxed else [[item] for item in items]
        count = min(pipe.count for pipe in inputs)
        if count:
            columns = [pipe.take(self._wanted(count)) for pipe in inputs]
            self._count_in(len(columns[0]))
            return list(map(list, zip(*columns, strict=True)))     # count items each
        if all(pipe.ended for pipe in inputs):
            self.inputs_done = True
            return []
        if any(pipe.ended for pipe in inputs) and any(pipe.count for pipe in inputs):
            return self._mismatched_rows()
        return None

    def _mismatched_rows(self) -> list[Any] | None:
        """Some inputs of the join ended while others go on: a failure of the run (which
        ends the inputs), and a PiperError in place of each missing item."""
        inputs = self.inputs
        if self.mismatch is None:
            ended = next(k for k, pipe in enumerate(inputs) if pipe.ended)
            upstream = self.input_names
            self.mismatch = PiperError(
                f"the inputs of piper {self.head.name!r} have different lengths: input "
                f"{ended} ({upstream[ended]!r}) ended after {self.counters_of(self.head).items_in}"
                f" items while others went on (inputs in join order: {upstream}); the "
                f"missing items are errors in place. Every input of a join must give the "
                f"same number of items; check the inputs and the produce/consume settings "
                f"upstream.")
            self.context.fail(self.mismatch)
        count = min(pipe.count for pipe in inputs if not pipe.ended)
        if not count:
            return None         # another input that goes on has nothing yet
        columns = [pipe.take(count) if not pipe.ended else [_GAP] * count for pipe in inputs]
        rows = [[self.mismatch if x is _GAP else x for x in row]
                for row in zip(*columns, strict=True)]
        self._count_in(len(rows))
        if all(pipe.ended for pipe in inputs):
            self.inputs_done = True
        return rows

    def _wanted(self, ready: int) -> int:
        return min(ready, self.chunk) if self.imap is None else ready

    def _count_in(self, count: int) -> None:
        self.counters_of(self.head).items_in += count

    def _group(self, rows: list[Any]) -> list[Any]:
        """consume = n > 1: whole blocks of n x stride rows as inboxes of n rows, group g of
        a block taking rows g, g + stride, ..."""
        n = self.head.consume
        if n == 1:
            return rows
        self.rows += rows
        size = n * self.stride
        inboxes: list[Any] = []
        while len(self.rows) >= size:
            block, self.rows = self.rows[:size], self.rows[size:]
            inboxes += [block[g::self.stride] for g in range(self.stride)]
        return inboxes

    def _group_tail(self) -> list[Any]:
        """The last, short block of m rows: read as ceil(m / n) groups (the inverse of an
        upstream produce = n that emitted its last k < stride results as n rounds of k)."""
        block, self.rows = self.rows, []
        if not block:
            return []
        stride = -(-len(block) // self.head.consume)
        return [group for group in (block[g::stride] for g in range(stride)) if group]

    def _evaluate_linear(self, inboxes: list[Any]) -> None:
        started = time.perf_counter()
        values, raised = self.call.call_batch(inboxes)
        elapsed = time.perf_counter() - started
        per_item = elapsed / len(inboxes)
        self.chunk = max(1, min(4096, int(LINEAR_CHUNK_SECONDS / per_item) if per_item
                                else 4096, 4 * self.chunk))
        self._emit(self._settled(values, raised))

    def _settled(self, values: list[Any], errors: dict[int, BaseException] | None
                 ) -> list[Any]:
        """Settle a batch of results; a Multiple becomes its items, a None of a Piper that
        drops them none (papy._fanout)."""
        values = settle(self, values, errors)
        if self.fanned or self.piper.drop_none:
            self.fanned = False
            values = fan_out(values, self.piper.drop_none)
        return values

    def _collect(self) -> bool:
        """Pool node: take the results that are ready, settle and emit them."""
        task = self.task
        if task is None or self.task_done:
            return False
        moved = False
        while True:
            ready = task.take_ready()
            if ready is None:
                self.task_done = True
                return True
            values, errors = ready
            if not values:
                return moved
            moved = True
            self.in_flight -= len(values)
            self._emit(self._settled(values, errors))

    # -- produce and emit ------------------------------------------------------------------
    def _emit(self, results: list[Any]) -> None:
        n = self.piper.produce
        if n > 1:
            self.made += results
            stride = self.stride
            items: list[Any] = []
            while len(self.made) >= stride:
                block, self.made = self.made[:stride], self.made[stride:]
                items += self._produce(block, n)
            results = items
        if results:
            self._give(results)

    def _produce(self, block: list[Any], n: int) -> list[Any]:
        exploded = [self._explode(result, n) for result in block]
        return [values[k] for k in range(n) for values in exploded]

    def _explode(self, result: Any, n: int) -> list[Any]:
        if self.piper.repeat or isinstance(result, BaseException):
            return [result] * n
        try:
            values = list(itertools.islice(iter(result), n))
        except TypeError:
            values = []
        if len(values) == n:
            return values
        error = PiperError(ValueError(
            f"piper {self.name!r} has produce={n}, so its function must return a sequence "
            f"of at least {n} items (or use repeat=True); it returned {_short_repr(result)}"))
        log.error("%s", error.args[0])
        self.counters.errors += 1
        self.context.failed_items.record(self.piper, None, error)
        return [error] * n

    def _give(self, items: list[Any]) -> None:
        """Hand ``items`` on: to the Outlet of an output (its readers count them), or to
        every downstream Pipe (a debug Piper's error items are failures of the run there)."""
        if self.outlet is not None:
            self.outlet.put(items)
            return
        self.counters.items_out += len(items)
        if self.piper.debug and any(isinstance(item, PiperError) for item in items):
            items = [self._raised(item) if isinstance(item, PiperError) else item
                     for item in items]
        for pipe in self.outputs:
            pipe.put(items)

    def _raised(self, error: PiperError) -> PiperError:
        """A debug Piper 'raises' an error item to the Piper that reads it: that is a
        failure of the run, and a PiperError in its place."""
        readers = [pipe.reader for pipe in self.outputs]
        self.context.fail(error, f"the input of piper {readers[0]!r} raised")
        return PiperError(error)

    def _finish(self) -> None:
        """Inputs ended and every result is out: the tail of a produce block, then the end
        of the stream for every reader."""
        if self.made:
            block, self.made = self.made, []
            self._give(self._produce(block, self.piper.produce))
        self.done = True
        for pipe in self.outputs:
            pipe.closed = True
        if self.outlet is not None:
            self.outlet.close()

    def abort(self) -> None:
        """The run is being stopped: drop what is held (the IMap is stopped by the run)."""
        self.rows, self.made = [], []
        self.in_flight = 0
        self.done = True
        if self.channel is not None:
            self.channel.close()

    def __repr__(self) -> str:
        return f"Node({'>'.join(p.name for p in self.pipers)})"
