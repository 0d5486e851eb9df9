"""The body of a Reducer or a Frame: a chain of stages its items go through, tagged.

    composite node (papy._reduce_node, papy._frame_core), in the run's scheduler thread
        | put(items, tags)        a tag says whose an item is: a Frame's loop, a Reducer's
        v                         window; it never leaves the parent
    stage 0 --drain--> stage 1 --drain--> ... --> exit --take()--> the composite
      PiperStage: a Piper on its IMap (an ordered task: the tags of what is in flight wait
                  in a FIFO here) or evaluated here in chunks (a linear Piper)
      FrameCore:  a Frame nested in the body (papy._frame_core): loops of its own
                  (``Multiple`` results and dropped ``None``s: each output takes its input's tag)

``outstanding[tag]`` counts the items of ``tag`` inside the body (a stage's input that
became c outputs counts c); the composite learns through ``emptied`` which tags have no
item left inside, which is how a scope knows that nothing of it is outstanding.
"""
from __future__ import annotations

import collections
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol

from imap import PushSource

from imap import BrokenPoolError

from ._channels import Pipe
from ._errors import PiperError
from ._fanout import fan_out_counted
from ._nodes import LINEAR_CHUNK_SECONDS, Node
from ._settle import read_error, settle

if TYPE_CHECKING:
    from ._piper import Piper
    from ._run import Run
    from ._runtime import RunContext

log = logging.getLogger(__name__)

__all__ = ["Body", "Stage", "PiperStage", "check_body", "composite_worker", "pool_error",
           "ERRORS_KEPT"]

#: error items a composite node keeps for ``error_items`` (the others are counted only)
ERRORS_KEPT = 10_000

Wake = Callable[[], None]


class Stage(Protocol):
    """What the Body needs of a stage (PiperStage, papy._frame_core.FrameCore)."""

    name: str

    def attach(self, run: Run, wake: Wake) -> None: ...
    def put(self, items: list[Any], tags: list[Any]) -> None: ...
    def step(self) -> bool: ...
    def drain(self) -> tuple[list[Any], list[Any], list[Any]]: ...
    def held(self) -> int: ...
    def close(self) -> None: ...
    def detach(self) -> None: ...


def check_body(owner: str, body: Any) -> tuple[Piper, ...]:
    """The Pipers of a body, checked: Pipers or Frames, consume/produce/spawn 1, no Reducer,
    none twice."""
    from ._piper import Piper
    if isinstance(body, Piper) or not hasattr(body, "__iter__"):
        body = (body,)
    pipers = tuple(body)
    for piper in pipers:
        if not isinstance(piper, Piper):
            raise TypeError(f"{owner}: a body is a sequence of Pipers (or Frames), not "
                            f"{piper!r}")
        if getattr(piper, "is_reducer", False):
            raise ValueError(f"{owner}: Reducer {piper.name!r} cannot be in a body (a "
                             f"Reducer closes a scope of the pipeline; put it after)")
        if (piper.consume, piper.produce, piper.spawn) != (1, 1, 1):
            raise ValueError(f"{owner}: piper {piper.name!r} of a body must have consume, "
                             f"produce and spawn 1 (use Multiple to emit several items)")
    if len({id(p) for p in pipers}) != len(pipers):
        raise ValueError(f"{owner}: a Piper is twice in the body")
    return pipers


class Body:
    """A chain of stages between a composite's entry and its fold (see the module doc)."""

    def __init__(self, pipers: tuple[Piper, ...], context: RunContext):
        self.stages: list[Stage] = [make_stage(piper, context) for piper in pipers]
        self.outstanding: collections.Counter[Any] = collections.Counter()
        self.total = 0              # items inside
        self.emptied: set[Any] = set()
        self._exit_items: list[Any] = []
        self._exit_tags: list[Any] = []

    def attach(self, run: Run, wake: Wake) -> None:
        for stage in self.stages:
            stage.attach(run, wake)

    def put(self, items: list[Any], tags: list[Any]) -> None:
        if not items:
            return
        self._count(tags, ())
        if self.stages:
            self.stages[0].put(items, tags)
        else:
            self._exit_items += items
            self._exit_tags += tags

    def step(self) -> bool:
        """Step every stage, upstream first, handing each one's outputs to the next."""
        moved = False
        stages = self.stages
        for k, stage in enumerate(stages):
            if stage.step():
                moved = True
            items, tags, consumed = stage.drain()
            if not consumed and not items:
                continue
            moved = True
            self._count(tags, consumed)
            if k + 1 < len(stages):
                if items:
                    stages[k + 1].put(items, tags)
            else:
                self._exit_items += items
                self._exit_tags += tags
        return moved

    def take(self) -> tuple[list[Any], list[Any]]:
        """The items that left the last stage, and their tags (no longer counted inside)."""
        items, tags = self._exit_items, self._exit_tags
        if items:
            self._exit_items, self._exit_tags = [], []
            self._count((), tags)
        return items, tags

    def _count(self, added: Any, removed: Any) -> None:
        outstanding = self.outstanding
        if added:
            outstanding.update(added)
            self.total += len(added)
        if removed:
            for tag, count in collections.Counter(removed).items():
                left = outstanding[tag] - count
                if left:
                    outstanding[tag] = left
                else:
                    del outstanding[tag]
                    self.emptied.add(tag)
            self.total -= len(removed)

    def held(self) -> int:
        return self.total

    def close(self) -> None:
        for stage in self.stages:
            stage.close()

    def detach(self) -> None:
        for stage in self.stages:
            stage.detach()


def pool_error(owner: Any, exc: BaseException) -> PiperError:
    """The error item of a composite (a ReduceNode, a FrameCore) for a call its pool could
    not evaluate (a worker lost, a result that cannot be pickled), counted and recorded as
    settle does; a broken pool is also a failure of the run, said once."""
    if isinstance(exc, BrokenPoolError) and not owner.broken:
        owner.broken = True
        owner.context.fail(exc, f"the pool of {owner.name!r} is broken")
    error = read_error(exc, owner.piper, quiet=owner.broken)
    owner.counters.errors += 1
    owner.context.failed_items.record(owner.piper, None, error)
    return error


def _composite(inbox: Any) -> Any:
    raise PiperError("a Reducer or a Frame is evaluated by its node, not as a Worker")


def composite_worker() -> Any:
    """The Worker a Reducer or a Frame holds as a Piper (never evaluated)."""
    from ._worker import Worker
    return Worker(_composite)


def make_stage(piper: Piper, context: RunContext) -> Stage:
    maker = getattr(piper, "make_stage", None)
    if maker is not None:
        stage: Stage = maker(context)
        return stage
    return PiperStage(piper, context)


class PiperStage:
    """One Piper of a body: a Node of its own (its call, counters, settle), driven here."""

    def __init__(self, piper: Piper, context: RunContext):
        self.piper = piper
        self.name = piper.name
        self.node = Node((piper,), [Pipe()], context)
        self.pool = piper.parallel if piper.parallel is not False else None
        self._tags: collections.deque[Any] = collections.deque()   # pool: in flight
        self._waiting: list[Any] = []           # linear: items not evaluated yet
        self._waiting_tags: list[Any] = []
        self._chunk = 64
        self._out: list[Any] = []
        self._out_tags: list[Any] = []
        self._consumed: list[Any] = []
        self._run: Run | None = None

    def attach(self, run: Run, wake: Wake) -> None:
        node = self.node
        run.adopt(self.piper, node)
        self._run = run
        if self.pool is None:
            return
        run.add_pool(self.pool, self.name)
        node.channel = PushSource()
        try:        # ordered whatever the IMap says: the tags wait in order here
            node.task = self.pool.add_task(node.call, node.channel,
                                           item_timeout=self.piper.timeout, ordered=True)
        except Exception as exc:
            raise PiperError(f"piper {self.name!r}: cannot add its task to {self.pool!r}: "
                             f"{exc}") from exc
        node.task.notify(wake)

    def put(self, items: list[Any], tags: list[Any]) -> None:
        node = self.node
        node.counters.items_in += len(items)
        if self.pool is None:
            self._waiting += items
            self._waiting_tags += tags
            return
        assert node.channel is not None
        node.in_flight += len(items)
        self._tags.extend(tags)
        node.channel.push_many(items)         # a body Piper is boxed: one input, consume 1

    def step(self) -> bool:
        if self.pool is None:
            return self._evaluate()
        task = self.node.task
        if task is None:
            return False
        moved = False
        while True:
            ready = task.take_ready()
            if ready is None or not ready.values:
                return moved
            moved = True
            values, errors = ready
            count = len(values)
            self.node.in_flight -= count
            tags = [self._tags.popleft() for _ in range(count)]
            self._settled(values, errors, tags)

    def _evaluate(self) -> bool:
        """A linear Piper: a chunk of about LINEAR_CHUNK_SECONDS, here."""
        if not self._waiting:
            return False
        count = self._chunk
        items, self._waiting = self._waiting[:count], self._waiting[count:]
        tags, self._waiting_tags = self._waiting_tags[:count], self._waiting_tags[count:]
        started = time.perf_counter()
        values, raised = self.node.call.call_batch(items)
        per_item = (time.perf_counter() - started) / len(items)
        self._chunk = max(1, min(4096, int(LINEAR_CHUNK_SECONDS / per_item) if per_item
                                 else 4096, 4 * self._chunk))
        self._settled(values, raised, tags)
        return True

    def _settled(self, values: list[Any], errors: dict[int, BaseException] | None,
                 tags: list[Any]) -> None:
        node = self.node
        values = settle(node, values, errors)
        drop = self.piper.drop_none
        if node.fanned or drop:
            node.fanned = False
            values, counts = fan_out_counted(values, drop)
            out_tags = list(itertools.chain.from_iterable(map(itertools.repeat, tags, counts)))
        else:
            out_tags = tags
        node.counters.items_out += len(values)
        self._out += values
        self._out_tags += out_tags
        self._consumed += tags

    def drain(self) -> tuple[list[Any], list[Any], list[Any]]:
        out = self._out, self._out_tags, self._consumed
        if out[2]:
            self._out, self._out_tags, self._consumed = [], [], []
        return out

    def held(self) -> int:
        return self.node.in_flight + len(self._waiting)

    def close(self) -> None:
        if self.node.channel is not None:
            self.node.channel.close()

    def detach(self) -> None:
        self.node.remove_task()
        if self._run is not None:
            self._run.forget(self.piper)
