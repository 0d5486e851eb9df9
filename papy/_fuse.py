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

``Dagger.fuse = False`` (or ``plumber.fuse = False``) turns fusion off.
"""
from __future__ import annotations

from typing import Any, Callable

from ._cache_run import call_one, carry_stages, record_of
from ._errors import PiperError, WorkerError
from ._worker import NEVER_SUSPECT, REPORT_EVERY, Busy, _clock, any_instance, map_stage

__all__ = ["groups", "FusedCall", "StagesFailed"]


Group = tuple[tuple[Any, ...], tuple[tuple[int, ...], ...]]


def groups(order: list[Any], upstream: Callable[[Any], list[Any]],
           downstream: Callable[[Any], list[Any]]) -> dict[int, Group]:
    """``{id(exit): (members, stage inputs)}`` for every fused group of the graph (see the
    module docstring); members in ``order`` (topological: the head first, the exit last);
    ``upstream(p)``/``downstream(p)`` give a Piper's neighbours (upstream in join order).
    Groups are grown from the exits, downstream first."""
    found: dict[int, Group] = {}
    taken: set[int] = set()
    rank = {id(p): k for k, p in enumerate(order)}
    for exit_ in reversed(order):
        if id(exit_) in taken or not _may_exit(exit_):
            continue
        members = _grow(exit_, upstream, downstream, taken)
        if not _valid(members, upstream):
            members = _chain(exit_, upstream, downstream, taken)
        if len(members) < 2:
            continue
        pipers = tuple(sorted(members.values(), key=lambda p: rank[id(p)]))
        index = {id(p): k for k, p in enumerate(pipers)}
        inputs = tuple(() if k == 0 else tuple(index[id(u)] for u in upstream(p))
                       for k, p in enumerate(pipers))
        found[id(exit_)] = (pipers, inputs)
        taken.update(index)
    return found


def _may_exit(piper: Any) -> bool:
    return (piper.parallel is not False and not piper.connected and piper.spawn == 1
            and piper.timeout is None)


def _absorbable(up: Any, imap: Any) -> bool:
    """``up`` can run inside a group on ``imap``: nothing for the parent to do after it."""
    return (up.parallel is imap and not up.connected and up.spawn == 1
            and up.timeout is None and up.produce == 1 and not up.track and not up.debug)


def _grow(exit_: Any, upstream: Callable[[Any], list[Any]],
          downstream: Callable[[Any], list[Any]], taken: set[int]) -> dict[int, Any]:
    """The largest set above ``exit_`` whose members are read only inside the set."""
    members = {id(exit_): exit_}
    grew = True
    while grew:
        grew = False
        for piper in list(members.values()):
            for up in upstream(piper):
                if (id(up) not in members and id(up) not in taken
                        and _absorbable(up, exit_.parallel)
                        and all(id(d) in members for d in downstream(up))):
                    members[id(up)] = up
                    grew = True
    return members


def _valid(members: dict[int, Any], upstream: Callable[[Any], list[Any]]) -> bool:
    """One head, reading only from outside (any ``consume``); every other member reads
    only members, one inbox per item (``consume == 1``)."""
    heads = 0
    for piper in members.values():
        inside = [id(u) in members for u in upstream(piper)]
        if all(inside) and inside:
            if piper.consume != 1 or getattr(piper, "combine", "zip") != "zip":
                return False            # (a product's rows are made by its own node)
        elif any(inside):
            return False
        else:
            heads += 1
    return heads == 1


def _chain(exit_: Any, upstream: Callable[[Any], list[Any]],
           downstream: Callable[[Any], list[Any]], taken: set[int]) -> dict[int, Any]:
    """The chain ``p1 -> ... -> exit`` above ``exit_`` (each read only by the next)."""
    members = {id(exit_): exit_}
    piper = exit_
    while True:
        ups = upstream(piper)
        if len(ups) != 1 or piper.consume != 1:
            return members
        up = ups[0]
        if (id(up) in taken or not _absorbable(up, exit_.parallel)
                or len(downstream(up)) != 1):
            return members
        members[id(up)] = up
        piper = up


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

    __slots__ = ("workers", "boxing", "inputs", "stages", "pending", "reported", "records")

    def __init__(self, workers: Any, boxing: bool,
                 inputs: tuple[tuple[int, ...], ...] | None = None):
        workers = tuple(workers)
        if inputs is None:
            inputs = ((),) + tuple((k,) for k in range(len(workers) - 1))
        self.__setstate__((workers, boxing, tuple(inputs)))

    def call_batch(self, items: list[Any]) -> tuple[list[Any], dict[int, BaseException] | None]:
        values, raised = self._call_batch(items)
        if self.records is not None:    # cached stages' counts travel with the results
            carry_stages(self.records, values, raised)
        return values, raised

    def _call_batch(self, items: list[Any]
                    ) -> tuple[list[Any], dict[int, BaseException] | None]:
        pending, last = self.pending, len(self.stages) - 1
        outputs: list[list[Any]] = []
        clean: list[bool] = []      # per stage: every value of a NEVER_SUSPECT type
        start = now = _clock()
        for stage, (worker, bare) in enumerate(self.stages):
            reads = self.inputs[stage]
            if not reads:
                values, raised = map_stage(worker, bare, items, self.boxing)
            elif len(reads) == 1:
                values, raised = map_stage(worker, bare, outputs[reads[0]], True,
                                           clean[reads[0]])
            else:
                inboxes = list(map(list, zip(*(outputs[k] for k in reads))))
                values, raised = map_stage(worker, bare, inboxes, False)
            now = _clock()
            pending[stage] += now - start
            start = now
            outputs.append(values)
            if stage == last:
                if raised:
                    return self._with_failures(items, outputs, stage, raised, now)
                break
            # one scan of the types: plain values need no other check here or next stage
            clean.append(NEVER_SUSPECT.issuperset(map(type, values)))
            if raised or (not clean[stage] and any_instance(values, _SKIPPED_BY_NEXT)):
                return self._with_failures(items, outputs, stage, raised, now)
        values = outputs[last]
        if now - self.reported >= REPORT_EVERY:
            values[-1] = self._report(values[-1], now)
        return values, None

    def _with_failures(self, items: list[Any], outputs: list[list[Any]], failed_at: int,
                       raised: dict[int, BaseException] | None, start: float
                       ) -> tuple[list[Any], dict[int, BaseException] | None]:
        """The slow path, from the first stage that gave an error or raised: each later
        stage evaluates only the items whose inputs it can read."""
        pending, last, count = self.pending, len(self.stages) - 1, len(items)
        failures: dict[int, dict[int, Any]] = {}    # position -> {stage: its own error}
        dead: dict[int, BaseException] = {}         # position -> what it raised
        usable: list[list[bool]] = []               # per stage: position -> value usable
        for stage in range(failed_at):
            usable.append([True] * count)
        usable.append(self._sort_out(failed_at, outputs[failed_at], range(count), raised,
                                     failures, dead))
        for stage in range(failed_at + 1, len(self.stages)):
            worker, bare = self.stages[stage]
            reads = self.inputs[stage]
            positions = [p for p in range(count) if p not in dead and (
                all(usable[k][p] for k in reads) if reads else True)]
            if not reads:
                values, stage_raised = map_stage(worker, bare, [items[p] for p in positions],
                                                 self.boxing)
            else:
                inboxes = [[outputs[k][p] for k in reads] for p in positions]
                values, stage_raised = map_stage(worker, bare, inboxes, False)
            now = _clock()
            pending[stage] += now - start
            start = now
            full = [None] * count
            for position, value in zip(positions, values):
                full[position] = value
            outputs.append(full)
            usable.append(self._sort_out(stage, full, positions, stage_raised, failures, dead))
        results = outputs[last]
        for position, errors in failures.items():
            if position not in dead:
                results[position] = StagesFailed(errors)
        for position in dead:
            results[position] = None
        return results, dead or None

    def _sort_out(self, stage: int, values: list[Any], positions: Any,
                  raised: dict[int, BaseException] | None, failures: dict[int, dict[int, Any]],
                  dead: dict[int, BaseException]) -> list[bool]:
        """Which positions of ``stage`` hold a value the next stages can read; records the
        stage's own errors (not for the exit) and what raised."""
        last = len(self.stages) - 1
        usable = [False] * len(values)
        for k, position in enumerate(positions):
            if raised and k in raised:
                dead[position] = raised[k]
                continue
            value = values[position]
            if stage != last and isinstance(value, _SKIPPED_BY_NEXT):
                failures.setdefault(position, {})[stage] = value
            else:
                usable[position] = True
        return usable

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
        return (self.workers, self.boxing, self.inputs)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.workers, self.boxing, self.inputs = state
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
