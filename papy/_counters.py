"""Per-Piper counters of a run: written by the run's scheduler thread (and, for an output,
by its readers), read by anyone (progress, stats) as plain numbers."""
from __future__ import annotations

from dataclasses import dataclass
from types import MemberDescriptorType
from typing import Any, Iterator

__all__ = ["PiperCounters", "OutputCounters", "LinkedCounters"]


@dataclass(slots=True)
class PiperCounters:
    """Inboxes taken, items given out, error items, seconds the Worker was busy (measured
    where it ran) and seconds the run waited for this Piper's results (the scheduler had
    nothing else to do while items of this Piper were in its pool; 0.0 for a linear
    Piper). ``counters['items_in']`` works too."""

    items_in: int = 0
    items_out: int = 0
    errors: int = 0
    time_busy: float = 0.0
    time_waiting: float = 0.0

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


# the slots of the base class (their member descriptors: ``vars`` is what attribute access
# on the class returns, without mypy reading the field as an int)
_ITEMS_OUT: MemberDescriptorType = vars(PiperCounters)["items_out"]
_ITEMS_IN: MemberDescriptorType = vars(PiperCounters)["items_in"]


class OutputCounters(PiperCounters):
    """The counters of an output Piper: ``items_out`` counts what its readers took, less
    what is left of the batch being read (``unread``)."""

    __slots__ = ("unread",)

    def __init__(self) -> None:
        super().__init__()
        self.unread: Iterator[Any] | None = None

    @property       # a slot of the base class, read through
    def items_out(self) -> int:
        unread = self.unread
        out: int = _ITEMS_OUT.__get__(self)
        if unread is None:
            return out
        left: int = unread.__length_hint__()  # type: ignore[attr-defined]  # a list iterator's
        return out - left

    @items_out.setter
    def items_out(self, value: int) -> None:
        _ITEMS_OUT.__set__(self, value)


class LinkedCounters(PiperCounters):
    """The counters of a Piper absorbed into a fused chain: ``items_out`` (and ``items_in``,
    except for the chain's first Piper) are the items that left the chain, counted on the
    chain's last Piper as its ``items_in``; ``errors`` and ``time_busy`` are its own."""

    __slots__ = ("link", "first")

    def __init__(self, link: PiperCounters, first: bool):
        super().__init__()
        self.link, self.first = link, first

    @property
    def items_in(self) -> int:
        return int(_ITEMS_IN.__get__(self)) if self.first else self.link.items_in

    @items_in.setter
    def items_in(self, value: int) -> None:
        _ITEMS_IN.__set__(self, value)

    @property
    def items_out(self) -> int:
        return self.link.items_in

    @items_out.setter
    def items_out(self, value: int) -> None:
        pass        # the dataclass __init__ sets it: the count is the link's
