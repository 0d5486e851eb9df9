"""Fusion: consecutive Pipers on one IMap evaluated in one call, so an item crosses the
parent once per segment instead of once per Piper.

    without fusion                              with fusion (one segment a -> b -> c)

    parent  --a's task-->  worker               parent  --c's task-->  worker:
    parent  <--result----                                              a, then b, then c
    parent  --b's task-->  worker               parent  <--result----
    parent  <--result----                         (Busy: seconds per stage; StageFailed:
    parent  --c's task-->  worker                  the stage that gave an error, which
    parent  <--result----                          the parent passes on as b and c would)

A *segment* is a chain ``p1 -> ... -> pk`` (k >= 2) in which each Piper but the last is read
only by the next one and each Piper but the first reads only the previous one, all on the
same IMap, and nothing is done in the parent between two of them: ``spawn == 1`` and no
``timeout`` anywhere, ``produce == 1``, no ``track`` and no ``debug`` on ``p1 .. pk-1``,
``consume == 1`` on ``p2 .. pk``. The last Piper ``pk`` owns the IMap task (its Worker runs
after the others'); it reads the inputs of ``p1`` with ``p1``'s ``consume``. The results, the
errors in place, the log records and every Piper's counters are what the unfused pipeline
gives, except for errors of the IMap itself (a worker lost, a result that cannot be
pickled): which stage the item was in is not known, so they are the last Piper's. Also
different: the absorbed Pipers' results are not pickled between two stages (a
stage that mutates its input mutates the previous stage's result, which nobody else reads),
their ``time_waiting`` is 0 (the owner's covers the segment), and their ``items_out`` (and the
next Piper's ``items_in``) count the items that left the whole segment.

A stage that returns a ``Multiple`` (or a ``None`` its Piper drops) sends that item down the
slow path: each element goes through the later stages as an item of its own, and the
item's result is a ``Multiple`` of theirs, which the parent fans out (papy._fanout). A
Reducer or a Frame (``fusable = False``) is never part of a segment.

``Dagger.fuse = False`` (or ``plumber.fuse = False``) turns fusion off.
The segments of a graph are found by papy._fuse_groups (for the plan of a run).
"""
from __future__ import annotations

from typing import Any

from itertools import repeat
from operator import is_

from ._cache_run import call_one, carry_stages, record_of
from ._errors import PiperError, WorkerError
from ._fanout import Multiple
from ._timed import REPORT_EVERY, Busy, _clock
from ._worker import NEVER_SUSPECT, any_instance, map_stage

__all__ = ["FusedCall", "StagesFailed"]


class StagesFailed:
    """What a FusedCall returns for an item that some stages (not the last) failed: the
    error each of them gave itself, ``{stage: error}``; the stages that read them were
    skipped, and the parent passes the errors on through them as their Workers would
    have (``papy._settle.stages_failed``)."""

    __slots__ = ("errors",)

    def __init__(self, errors: dict[int, Any]):
        self.errors = errors

    def __reduce__(self) -> tuple[Any, ...]:
        return (StagesFailed, (self.errors,))


class FusedCall:
    """Evaluate the Workers of a fused group where the call runs, timing each stage.

    ``inputs[k]``: the stages stage ``k`` reads, in join order (``()`` for the head, which
    reads the call's items; ``boxing``: the items themselves, as ``BoxingCall``, else the
    inboxes). A chain is ``((), (0,), (1,), ...)``; the last stage is the group's exit.

    A batch (``call_batch``, imap.BatchFunction) goes through the stages in order, in C
    where it can (``map_stage``; a join's inboxes are zipped in C). An item that a stage
    failed (an error item, which the Workers that read it would not evaluate) skips the
    stages that read it, and so does an item whose function raised what is not an
    Exception (that position's error, as per item). Most results travel bare; about
    every ``REPORT_EVERY`` seconds one is wrapped in a ``Busy`` whose ``seconds`` is a
    tuple, one per stage.
    """

    __slots__ = ("workers", "boxing", "inputs", "drops", "stages", "pending", "reported",
                 "records")

    def __init__(self, workers: Any, boxing: bool,
                 inputs: tuple[tuple[int, ...], ...] | None = None,
                 drops: tuple[bool, ...] | None = None):
        workers = tuple(workers)
        if inputs is None:
            inputs = ((),) + tuple((k,) for k in range(len(workers) - 1))
        if drops is None:
            drops = (False,) * len(workers)
        self.__setstate__((workers, boxing, tuple(inputs), tuple(drops)))

    def call_batch(self, items: list[Any]) -> tuple[list[Any], dict[int, BaseException] | None]:
        values, raised = self._call_batch(items)
        if self.records is not None:    # cached stages' counts travel with the results
            carry_stages(self.records, values, raised)
        return values, raised

    def _call_batch(self, items: list[Any]
                    ) -> tuple[list[Any], dict[int, BaseException] | None]:
        pending, last = self.pending, len(self.stages) - 1
        outputs: list[list[Any]] = []
        kinds: list[frozenset[type]] = []      # per stage: the exact types of its values
        start = now = _clock()
        for stage, (worker, bare) in enumerate(self.stages):
            reads = self.inputs[stage]
            if not reads:
                values, raised = map_stage(worker, bare, items, self.boxing)
            elif len(reads) == 1:
                values, raised = map_stage(worker, bare, outputs[reads[0]], True,
                                           kinds[reads[0]])
            else:
                # every stage so far gave one value per item (or the slow path took over)
                inboxes = list(map(list, zip(*(outputs[k] for k in reads), strict=True)))
                values, raised = map_stage(worker, bare, inboxes, False,
                                           frozenset().union(*(kinds[k] for k in reads)))
            now = _clock()
            pending[stage] += now - start
            start = now
            outputs.append(values)
            if stage == last:
                if raised:
                    return self._slow(items, outputs, stage, raised, now)
                break
            # one scan of the types: plain values need no other check here or next stage
            kinds.append(frozenset(map(type, values)))
            clean = NEVER_SUSPECT.issuperset(kinds[stage])
            if raised or (not clean and any_instance(values, _IRREGULAR)) or (
                    self.drops[stage] and any(map(is_, values, repeat(None)))):
                return self._slow(items, outputs, stage, raised, now)
        values = outputs[last]
        if now - self.reported >= REPORT_EVERY:
            values[-1] = self._report(values[-1], now)
        return values, None

    def _slow(self, items: list[Any], outputs: list[list[Any]], at: int,
              raised: dict[int, BaseException] | None, start: float
              ) -> tuple[list[Any], dict[int, BaseException] | None]:
        """The slow path, from the first stage ``at`` that gave an error, raised, gave a
        Multiple or a None it drops: row by row (papy._fuse._Rows), each later stage
        evaluates only the rows whose inputs it can read; the elements of a Multiple that
        a stage gave go on as rows of their own, and the item's result is a Multiple."""
        pending, last = self.pending, len(self.stages) - 1
        rows = _Rows(len(items), outputs, at)
        stage, evaluated, stage_raised = at, list(range(len(items))), raised
        while True:
            rows.sort_out(stage, evaluated, stage_raised, stage == last)
            if stage == last:
                return rows.results(last)
            rows.expand(stage, self.drops[stage])
            stage += 1
            worker, bare = self.stages[stage]
            reads = self.inputs[stage]
            evaluated = rows.ready(reads)
            if not reads:
                values, stage_raised = map_stage(
                    worker, bare, [items[rows.owner[r]] for r in evaluated], self.boxing)
            else:
                inboxes = [[rows.outs[k][r] for k in reads] for r in evaluated]
                values, stage_raised = map_stage(worker, bare, inboxes, False)
            now = _clock()
            pending[stage] += now - start
            start = now
            rows.place(evaluated, values)

    def __call__(self, inbox: Any) -> Any:
        """One item (the IMap's tracked mode: small batches, slow items)."""
        if self.records is not None:    # cached stages: their writes wait for the batch
            return call_one(self.records, self._call_one, inbox)
        return self._call_one(inbox)

    def _call_one(self, inbox: Any) -> Any:
        values, raised = self.call_batch([inbox])
        if raised:
            raise raised[0]
        return values[0]

    def _report(self, value: Any, now: float) -> Busy:
        # threads of a pool share this object: the list is changed in place, never replaced,
        # so that time another thread adds now is reported next time, not lost
        pending = self.pending
        busy = tuple(pending)
        for stage, seconds in enumerate(busy):
            pending[stage] -= seconds
        self.reported = now
        return Busy(busy, value)

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.workers, self.boxing, self.inputs, self.drops)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.workers, self.boxing, self.inputs, self.drops = state
        self.stages = [(w, getattr(w, "_bare", None)) for w in self.workers]
        records = [record_of(w) for w in self.workers]
        self.records = records if any(r is not None for r in records) else None
        self.pending = [0.0] * len(self.workers)
        self.reported = _clock()

    def __repr__(self) -> str:
        return f"FusedCall({', '.join(repr(w) for w in self.workers)})"


# what the Workers that read a stage would not evaluate: an error item (the parent makes a
# PiperError of a WorkerError before the next Piper sees it)
_SKIPPED_BY_NEXT = (PiperError, WorkerError)
# what sends a batch down the slow path after a stage that is not the last
_IRREGULAR = (PiperError, WorkerError, Multiple)


class _Rows:
    """The state of FusedCall's slow path: one row per item, or per element of a Multiple
    a stage gave (``owner``: the item's position). Per stage and row: ``outs`` (the value),
    ``usable`` (the stages that read it may evaluate it); per row: ``failures`` (``{stage:
    its own error}``) and ``dead`` (what it raised: not an Exception)."""

    def __init__(self, count: int, outputs: list[list[Any]], at: int):
        self.count = count
        self.owner = list(range(count))
        self.outs = outputs
        self.usable: list[list[bool]] = [[True] * count for _ in range(at)]
        self.failures: dict[int, dict[int, Any]] = {}
        self.dead: dict[int, BaseException] = {}
        self.expanded: set[int] = set()     # items whose rows came from a Multiple

    def sort_out(self, stage: int, evaluated: list[int],
                 raised: dict[int, BaseException] | None, exit_: bool) -> None:
        """Which rows of ``stage`` hold a value the next stages can read; records the
        stage's own errors (not the exit's: settled as results) and what raised."""
        usable = [False] * len(self.owner)
        values = self.outs[stage]
        for k, row in enumerate(evaluated):
            if raised and k in raised:
                self.dead[row] = raised[k]
            elif not exit_ and isinstance(values[row], _SKIPPED_BY_NEXT):
                self.failures.setdefault(row, {})[stage] = values[row]
            else:
                usable[row] = True
        self.usable.append(usable)

    def expand(self, stage: int, drops: bool) -> None:
        """The usable Multiples of ``stage`` (and its Nones, when that Piper drops them)
        become their elements, one row each, the rows' other values copied."""
        values, usable = self.outs[stage], self.usable[stage]
        marks = [u and (type(v) is Multiple or (drops and v is None))
                 for v, u in zip(values, usable, strict=True)]
        if not any(marks):
            return
        owner: list[int] = []
        outs: list[list[Any]] = [[] for _ in range(stage + 1)]
        flags: list[list[bool]] = [[] for _ in range(stage + 1)]
        failures: dict[int, dict[int, Any]] = {}
        dead: dict[int, BaseException] = {}
        for row, marked in enumerate(marks):
            if marked:
                self.expanded.add(self.owner[row])
                value = values[row]
                elements = [] if value is None else value.items
                if drops:
                    elements = [e for e in elements if e is not None]
            else:
                elements = [values[row]]
            for element in elements:
                new = len(owner)
                owner.append(self.owner[row])
                for k in range(stage):
                    outs[k].append(self.outs[k][row])
                    flags[k].append(self.usable[k][row])
                outs[stage].append(element)
                flags[stage].append(usable[row])
                if row in self.failures:
                    failures[new] = dict(self.failures[row])
                if row in self.dead:
                    dead[new] = self.dead[row]
        self.owner, self.outs, self.usable = owner, outs, flags
        self.failures, self.dead = failures, dead

    def ready(self, reads: tuple[int, ...]) -> list[int]:
        """The rows a stage reading ``reads`` evaluates."""
        dead, usable = self.dead, self.usable
        return [r for r in range(len(self.owner))
                if r not in dead and all(usable[k][r] for k in reads)]

    def place(self, evaluated: list[int], values: list[Any]) -> None:
        full: list[Any] = [None] * len(self.owner)
        for row, value in zip(evaluated, values, strict=True):
            full[row] = value
        self.outs.append(full)

    def results(self, last: int) -> tuple[list[Any], dict[int, BaseException] | None]:
        """One result per item: the exit's value, a StagesFailed, or (expanded) a
        Multiple of those; an item with a row that raised is that position's error."""
        gathered: list[list[Any]] = [[] for _ in range(self.count)]
        raised: dict[int, BaseException] = {}
        exits = self.outs[last]
        for row, position in enumerate(self.owner):
            if row in self.dead:
                raised.setdefault(position, self.dead[row])
            elif row in self.failures:
                gathered[position].append(StagesFailed(self.failures[row]))
            else:
                gathered[position].append(exits[row])
        results: list[Any] = []
        for position, values in enumerate(gathered):
            if position in raised:
                results.append(None)
            elif position in self.expanded:
                flat: list[Any] = []
                for value in values:
                    if type(value) is Multiple:
                        flat += value.items
                    else:
                        flat.append(value)
                results.append(Multiple.of(flat))
            else:
                results.append(values[0])
        return results, raised or None
