"""Frame: a Piper that runs a ``while`` loop per item, whose body runs on the pools.

The Piper holds what its user gave (start, end, body, store, emit), checked once; its loops
are a FrameCore (papy._frame_core: the loop, the calls on the pool and the errors, drawn
there), nested in a body as a stage or driven in a run by a FrameNode, here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ._body import check_body, composite_worker
from ._errors import PapyError
from ._frame_core import FrameCore
from ._nodes import Node
from ._piper import Piper
from ._stores import Object

if TYPE_CHECKING:
    from ._channels import Pipe
    from ._run import Run
    from ._runtime import RunContext


__all__ = ["Frame", "FrameNode"]


class Frame(Piper):
    """A Piper that runs a loop per item (job_stream's frame).

    ``Frame(start, end, body=(), store=Object, emit=None, parallel=False, name=None)``

    - ``start(store, first)``: called when an item ``first`` arrives (with a fresh
      ``store()``) and again, with the same item, each time nothing of its loop is left in
      the body. What it returns (an item, a ``Multiple``) goes through ``body``; None ends
      the loop: ``emit(store)`` goes downstream (default: the store; a ``Multiple``:
      several items; None: nothing).
    - ``end(store, item)``: called for each item that leaves the body; what it returns is
      sent through the body again.
    - ``body``: the Pipers (or nested Frames) between the two, each on its own pool.
    - ``parallel``: the pool ``start``/``end``/``emit`` run on (False: in the run itself).
      The calls of one loop never overlap; many loops run at once.

    Example (sum 1..n per item; ``count_to(inbox)`` returns ``Multiple(range(1, n + 1))``)::

        frame = Frame(start, end, body=[Piper(count_to)],
                      emit=lambda store: (store.first, store.value))
    """

    fusable = False

    def __init__(self, start: Callable[[Any, Any], Any], end: Callable[[Any, Any], Any],
                 body: Any = (), store: Callable[[], Any] = Object,
                 emit: Callable[[Any], Any] | None = None, parallel: Any = False,
                 name: str | None = None):
        for what, func in (("start", start), ("end", end), ("store", store)):
            if not callable(func):
                raise TypeError(f"Frame {what} must be callable, not {func!r}")
        if emit is not None and not callable(emit):
            raise TypeError(f"Frame emit must be callable or None, not {emit!r}")
        given, name = name, name if name is not None else getattr(start, "__name__", "frame")
        super().__init__(composite_worker(), parallel=parallel, name=name)
        self._default_name = given is None      # start's name: numbered by a Dagger
        self.start_function, self.end, self.store, self.emit = start, end, store, emit
        self.body = check_body(f"Frame {self.name!r}", body)
        self._error_items: list[PapyError] = []

    def make_stage(self, context: RunContext) -> FrameCore:
        """This Frame nested in a body."""
        return FrameCore(self, context)

    @property
    def error_items(self) -> list[PapyError]:
        """The error items of its last run that left its body (not given to ``end``; at
        most ERRORS_KEPT)."""
        return list(self._error_items)


class FrameNode(Node):
    """The node of a Frame in a run (the Node contract: step/held/done/outputs/outlet)."""

    def __init__(self, pipers: tuple[Piper, ...], inputs: list[Pipe], context: RunContext,
                 stage_inputs: tuple[tuple[int, ...], ...] | None = None):
        super().__init__(pipers, inputs, context, stage_inputs)
        frame: Frame = self.piper  # type: ignore[assignment]  # a Frame's node
        self.core = FrameCore(frame, context, owner=self)

    @property
    def error_items(self) -> list[PapyError]:
        return self.core.error_items

    def add_task(self, wake: Callable[[], None]) -> None:
        self.core.add_task(wake)
        self.task = self.core.task

    def attach(self, run: Run) -> None:
        try:
            self.core.body.attach(run, run.wakeup.poke)
        except BaseException:
            self.remove_task()
            raise

    def remove_task(self) -> None:
        self.task = None
        task, self.core.task = self.core.task, None
        if task is not None:
            task.remove()
        self.core.body.detach()

    def held(self) -> int:
        held = sum(pipe.count for pipe in self.inputs) + self.in_flight
        return held + (self.outlet.count if self.outlet is not None else 0)

    def step(self) -> bool:
        if self.done:
            return False
        moved = False
        core = self.core
        if not self.inputs_done:
            rows = self._rows()
            if rows is not None:
                moved = True
                if rows:
                    core.put(rows, [0] * len(rows))
        moved = core.step() or moved
        items, _, consumed = core.drain()
        if consumed:
            moved = True
            if items:
                self._give(items)
        self.in_flight = core.held()
        if self.inputs_done and core.idle():
            core.close()
            self._finish()
            moved = True
        return moved

    def abort(self) -> None:
        super().abort()
        self.core.close()
        self.core.loops.clear()


# the node class is set on the Frame here, once both exist (read with getattr by the run)
Frame.node_type = FrameNode  # type: ignore[attr-defined]  # set here, not declared
