"""The scheduler: the one thread of a run that moves every batch between its nodes.

    inputs --Source.admit (while the run holds fewer than `window` items)--> input Pipes
    for each node, upstream first: collect its pool's results, feed it (papy._nodes)
    nothing moved: wait on the run's Wakeup (poked by an IMap task that delivered, an
    input that has items, a reader that took a batch, a stop request; or until a node's
    ``wake_at()``: a Reducer's time window closes), then go again

Memory: the run holds at most about ``window`` items (in Pipes, PushSources, IMap buffers,
blocks and Outlets): inputs are admitted only below it. Results are always taken out of an
IMap as soon as they are ready, so an IMap never holds more than the items the run gave it
and never fills its buffer with results nobody reads: no node can wait for another one
forever. One exception is bounded: a node that needs a whole block (``consume``,
``produce``) may need more items than the window holds; when nothing can move and nothing
is in flight, the scheduler admits more (a stall, logged at debug level).

Failures: an exception of the scheduler itself is a failure of the run; the run is then
stopped (``Run._scheduler_failed``).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from ._channels import Pipe, Wakeup

if TYPE_CHECKING:
    from imap.protocols import BatchSource

    from ._nodes import Node

log = logging.getLogger(__name__)

__all__ = ["Source", "schedule"]

#: the most items an input reader reads ahead of the scheduler
READ_AHEAD = 4096


class Source:
    """One input iterable of the run (behind its gate) and the Pipe it fills."""

    __slots__ = ("source", "pipe", "name")

    def __init__(self, source: BatchSource[Any], pipe: Pipe, name: str):
        self.source, self.pipe, self.name = source, pipe, name

    def admit(self, room: int) -> bool:
        """Move up to ``room`` ready items into the Pipe; True when something moved."""
        if self.pipe.closed:
            return False
        batch = self.source.take(room)
        if batch is None:
            self.pipe.closed = True
            return True
        if batch:
            self.pipe.put(batch)
            return True
        return False

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


def _held(nodes: list[Node]) -> int:
    return sum(node.held() for node in nodes)


def _one_pass(nodes: list[Node], sources: list[Source], window: int) -> bool:
    moved = False
    room = window - _held(nodes)
    for source in sources:
        if room > 0 and source.admit(room):
            moved = True
            room = window - _held(nodes)
    for node in nodes:
        if node.step():
            moved = True
    return moved


def _stalled(nodes: list[Node], sources: list[Source], window: int) -> bool:
    """Nothing moved, nothing is in flight and no output waits for a reader, yet the run is
    not over: a block needs more items than the window admits. Admit more."""
    if any(node.in_flight or (node.outlet is not None and node.outlet.count)
           for node in nodes):
        return False
    moved = False
    for source in sources:
        moved = source.admit(max(1, window // 4)) or moved
    if moved:
        log.debug("the run holds %d items (window %d) and a block needs more: admitting "
                  "more", _held(nodes), window)
    return moved


def _timeout(timed: list[Any]) -> float | None:
    """Seconds until the first time a node wants a step without being poked (a window of
    a Reducer closes), or None."""
    deadlines = [at for at in (node.wake_at() for node in timed) if at is not None]
    return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None


def schedule(nodes: list[Node], sources: list[Source], window: Callable[[], int],
             wakeup: Wakeup, aborting: Callable[[], bool]) -> None:
    """Run the scheduler loop until every node is done or ``aborting()`` says so;
    ``window()`` is asked once per pass (it follows the IMaps' buffers in force)."""
    pooled = [node for node in nodes if node.imap is not None]
    timed = [node for node in nodes if hasattr(node, "wake_at")]    # Reducer(interval=)
    clock = time.perf_counter
    while not aborting():
        moved = _one_pass(nodes, sources, window())
        if all(node.done for node in nodes):
            return
        if moved or _stalled(nodes, sources, window()):
            continue
        idle = clock()
        wakeup.wait(_timeout(timed) if timed else None)
        waited = clock() - idle
        for node in pooled:
            if node.in_flight:
                node.counters.time_waiting += waited
