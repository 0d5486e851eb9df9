"""Reading an output Piper: the per-item API as a thin layer over its Outlet's batches.

    Outlet --take() a batch--> _Batches (counts items_out, marks the end)
        --> itertools.chain: next(piper) and ``for x in piper`` (C speed within a batch;
            both share one position)
    Outlet --take(block=False)--> plunger (``drain_ready``): whole batches, discarded,
            after what is left of the hand reader's batch

A debug Piper's reader raises its error items (``_DebugReader``), one at a time, and goes
on. One thread at a time reads a Piper item by item; the plunger may read at the same time
(each batch goes to one of them, and the rest of the batch a hand reader holds is taken
item by item by whichever comes first).
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ._channels import Outlet
from ._counters import OutputCounters
from ._errors import PiperError

if TYPE_CHECKING:
    from ._nodes import Node

__all__ = ["OutputReader"]


class OutputReader:
    """The reader of one output node: ``next_item`` (per item) and ``drain_ready``."""

    def __init__(self, node: Node, at_end: Callable[[], None],
                 raise_at_end: Callable[[], None]):
        assert node.outlet is not None and isinstance(node.counters, OutputCounters)
        self.outlet: Outlet = node.outlet
        self.counters: OutputCounters = node.counters
        self.finished = False
        self._at_end = at_end
        self.raise_at_end = raise_at_end
        self.debug = node.piper.debug
        self.name = node.name
        self.context = node.context
        batches = _Batches(self)
        self.next_item: Callable[[], Any] = (
            _DebugReader(batches).__next__ if node.piper.debug
            else itertools.chain.from_iterable(batches).__next__)

    def loaded(self, batch: list[Any]) -> Iterator[Any]:
        items = iter(batch)
        counters = self.counters
        counters.items_out += len(batch)
        counters.unread = items
        return items

    def ended(self) -> None:
        if not self.finished:
            self.finished = True
            self.counters.unread = None
            self._at_end()

    def holds_unread(self) -> bool:
        """Is part of a batch a hand reader took still unread?"""
        unread = self.counters.unread
        return unread is not None and bool(
            unread.__length_hint__())  # type: ignore[attr-defined]  # a list iterator's

    def take_ready(self) -> list[list[Any]]:
        """Every batch ready now (first what is left of the batch a hand reader holds),
        counted as read; [] when none. At the end (or when the run was stopped, whose
        reason is a failure of the run already) the reader is marked finished."""
        taken: list[list[Any]] = []
        unread = self.counters.unread
        if unread is not None and \
                unread.__length_hint__():  # type: ignore[attr-defined]  # a list iterator's
            taken.append(list(unread))
        while True:
            try:
                batch = self.outlet.take(block=False)
            except TimeoutError:
                return taken
            except BaseException:  # noqa: BLE001 - the run was stopped: recorded there
                self.ended()
                return taken
            if batch is None:
                self.ended()
                return taken
            self.counters.items_out += len(batch)
            taken.append(batch)
            if self.debug:
                self._raise_errors(batch)

    def _raise_errors(self, batch: list[Any]) -> None:
        """A debug Piper read in batches (plunger, collect): each error item is a failure
        of the run, as when a hand reader gets it raised."""
        for item in batch:
            if isinstance(item, PiperError):
                self.context.fail(item, f"output piper {self.name!r} raised (debug)")


class _Batches:
    """The batches of an Outlet as list iterators, for ``chain.from_iterable``."""

    __slots__ = ("reader",)

    def __init__(self, reader: OutputReader):
        self.reader = reader

    def __iter__(self) -> _Batches:
        return self

    def __next__(self) -> Iterator[Any]:
        reader = self.reader
        batch = reader.outlet.take()
        if batch is None:
            reader.ended()
            reader.raise_at_end()
            raise StopIteration
        return reader.loaded(batch)


class _DebugReader:
    """A debug Piper's items: an error item is raised in its place, then reading goes on."""

    def __init__(self, batches: _Batches):
        self.batches = batches
        self.items: Iterator[Any] = iter(())

    def __next__(self) -> Any:
        while True:
            for item in self.items:
                if isinstance(item, PiperError):
                    raise item
                return item
            self.items = next(self.batches)
