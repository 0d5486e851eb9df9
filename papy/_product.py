"""combine='product': a join whose inboxes are the cross product of its inputs (pacer's
``@join``), in ``itertools.product`` order.

    input 0 (streams) ----------------------+
    input 1 .. k (read to their end first) -+--> combinations, row-major:
                                                 for x in input 0:
                                                     for c in product(input 1, .., k):
                                                         [x, *c]
        --> the node's usual steps (papy._nodes.Node): group, evaluate, settle, emit

A ``ProductNode`` is a ``Node`` whose rows are made this way; everything after the rows is
the Node's. What it holds:

- the later inputs, taken out of their Pipes as they arrive and kept to their end (they
  are not counted in the run's window: a later input that comes from the same source as
  input 0 must be able to end while input 0 waits);
- input 0 stays in its Pipe, not counted in the window either, until the later inputs
  ended; then it streams: an item is taken when its combinations can be made;
- the combinations made and not yet evaluated: at most PRODUCT_AHEAD (a product can be
  much larger than its inputs), including what waits downstream.

An error item in any input is an item like the others: each combination it is part of is
an inbox that holds it, which the Worker passes on as a PiperError (an upstream error),
so a failure upstream of a product becomes an error item in each combination it touches;
nothing waits for it. A later input that never ends (an endless stream) keeps the product
from starting: only input 0 may be endless.
"""
from __future__ import annotations

import collections
import itertools
from typing import TYPE_CHECKING, Any

from ._nodes import Node

if TYPE_CHECKING:
    from ._channels import Pipe
    from ._piper import Piper
    from ._runtime import RunContext

__all__ = ["ProductNode", "join_node", "COMBINES"]

#: what ``Piper(combine=...)`` accepts
COMBINES = ("zip", "product")
#: the most combinations a product node makes ahead of its evaluation (downstream included)
PRODUCT_AHEAD = 4096


def join_node(head: Piper, inputs: int) -> type[Node]:
    """The node a Piper reading ``inputs`` inputs is (a product of one input is that
    input: a plain Node)."""
    if getattr(head, "combine", "zip") == "product" and inputs > 1:
        return ProductNode
    return Node


class ProductNode(Node):
    """A Node whose rows are the cross product of its inputs (module docstring)."""

    def __init__(self, pipers: tuple[Piper, ...], inputs: list[Pipe], context: RunContext,
                 stage_inputs: tuple[tuple[int, ...], ...] | None = None):
        super().__init__(pipers, inputs, context, stage_inputs)
        self.columns: list[list[Any]] = [[] for _ in inputs[1:]]
        self.combos: list[tuple[Any, ...]] | None = None    # known once the later ended
        self.current: collections.deque[Any] = collections.deque()  # input 0 items taken
        self.cursor = 0             # the next combination of current[0]

    def held(self) -> int:
        held = super().held() + len(self.current)
        if self.combos is None:     # input 0 waits for the others: outside the window
            held -= self.inputs[0].count
        return held

    def _rows(self) -> list[Any] | None:
        moved = False
        if self.combos is None:
            moved = self._read_later()
            if self.combos is None:
                return [] if moved else None
        first = self.inputs[0]
        before = first.count
        rows = self._combine(self._room())
        moved = moved or first.count != before
        if first.ended and not self.current:
            self.inputs_done = True
        if rows:
            self._count_in(len(rows))
            return rows
        return [] if moved or self.inputs_done else None

    def _read_later(self) -> bool:
        """Take what the later inputs hold; once they all ended, make the combinations."""
        moved = False
        for column, pipe in zip(self.columns, self.inputs[1:], strict=True):
            if pipe.count:
                column += pipe.take(pipe.count)
                moved = True
        if all(pipe.ended for pipe in self.inputs[1:]):
            self.combos = list(itertools.product(*self.columns))
            self.columns = []
            moved = True
        return moved

    def _room(self) -> int:
        """How many combinations may be made now."""
        waiting = self.in_flight + len(self.rows) + len(self.made)
        waiting += max((pipe.count for pipe in self.outputs), default=0)
        if self.outlet is not None:
            waiting += self.outlet.count
        room = PRODUCT_AHEAD - waiting
        return min(room, self.chunk) if self.imap is None else room

    def _combine(self, room: int) -> list[Any]:
        """Up to ``room`` rows: the next combinations of input 0's items, in order."""
        combos = self.combos
        assert combos is not None
        first, current = self.inputs[0], self.current
        rows: list[Any] = []
        while len(rows) < room:
            if not current:
                if not first.count:
                    break
                current.extend(first.take(max(1, (room - len(rows)) // max(1, len(combos)))))
                self.cursor = 0
            if not combos:                  # an empty later input: no combination at all
                current.clear()
                continue
            item, start = current[0], self.cursor
            end = min(len(combos), start + room - len(rows))
            rows += [[item, *combo] for combo in combos[start:end]]
            if end == len(combos):
                current.popleft()
                self.cursor = 0
            else:
                self.cursor = end
        return rows
