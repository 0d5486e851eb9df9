"""Variable fan-out: a Worker's result that stands for zero, one or many items.

    Worker (where the pool runs it)        parent (the run's scheduler thread)
    -------------------------------        ------------------------------------------------
    return Multiple(gen())  --------->     settle (papy._settle): each element settled as a
      (elements read and None dropped      result would be (errors in place, counted)
       at once, where the Worker runs)     fan_out: the elements become items, in order
    return None (Piper drop_none=True) ->  fan_out: no item

A result that is not a Multiple (and not a dropped None) stays one item: batches of plain
results never reach ``fan_out`` (settle's one type scan per batch says so).

``Args(*a, **k)``: an item that the job_stream front end (papy.inline) calls as
``f(*a, **k)``; plain Pipers pass it to their Worker as any other item.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

__all__ = ["Multiple", "Args", "call_with", "as_items", "fan_out", "fan_out_counted"]


class Multiple:
    """Several items where one result is expected: ``return Multiple([1, 2, 3])`` from a
    Worker sends 1, 2 and 3 downstream as three items, in that order.

    Any iterable works, a generator too: it is read at once (where the Worker runs, so a
    generator never crosses processes) and its ``None`` elements are dropped.
    ``Multiple([])`` sends nothing.

    Example::

        >>> list(Multiple(x for x in (1, None, 2)))
        [1, 2]
    """

    __slots__ = ("items",)

    def __init__(self, iterable: Iterable[Any] = ()) -> None:
        self.items: list[Any] = [item for item in iterable if item is not None]

    @classmethod
    def of(cls, items: list[Any]) -> Multiple:
        """A Multiple of ``items`` exactly (``None`` kept: used for the results of a fused
        stage, where ``None`` is an item unless that Piper drops it)."""
        made = cls.__new__(cls)
        made.items = items
        return made

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Multiple):
            return NotImplemented
        return self.items == other.items

    __hash__ = None  # type: ignore[assignment]  # unhashable, on purpose

    def __reduce__(self) -> tuple[Callable[[list[Any]], Multiple], tuple[list[Any]]]:
        return (Multiple.of, (self.items,))

    def __repr__(self) -> str:
        return f"Multiple({self.items!r})"


class Args:
    """Arguments for a call: an item ``Args(1, 2, c=3)`` that papy.inline's jobs, frames
    and result handlers receive as ``f(1, 2, c=3)``.

    Example::

        >>> Args(1, 2, c=3).call(lambda a, b, c: a + b + c)
        6
    """

    __slots__ = ("args", "kwargs")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def call(self, func: Callable[..., Any], *before: Any) -> Any:
        """``func(*before, *args, **kwargs)``."""
        return func(*before, *self.args, **self.kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Args):
            return NotImplemented
        return (self.args, self.kwargs) == (other.args, other.kwargs)

    __hash__ = None  # type: ignore[assignment]  # unhashable, on purpose

    def __reduce__(self) -> tuple[Any, ...]:
        return (_make_args, (self.args, self.kwargs))

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"Args({', '.join(parts)})"


def _make_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    return Args(*args, **kwargs)


def call_with(func: Callable[..., Any], item: Any, *before: Any) -> Any:
    """``func(*before, item)``, or ``func(*before, *a, **k)`` when ``item`` is an Args."""
    if type(item) is Args:
        return func(*before, *item.args, **item.kwargs)
    return func(*before, item)


def as_items(result: Any) -> list[Any]:
    """What a result stands for, job_stream's way: a Multiple its elements (no None),
    None nothing, anything else itself."""
    if result is None:
        return []
    if type(result) is Multiple:
        return [item for item in result.items if item is not None]
    return [result]


def fan_out(values: list[Any], drop_none: bool) -> list[Any]:
    """The items of a settled batch: each Multiple's elements in its place; ``None``
    results (and ``None`` elements) dropped when ``drop_none``."""
    items: list[Any] = []
    for value in values:
        if type(value) is Multiple:
            items += [x for x in value.items if x is not None] if drop_none else value.items
        elif value is not None or not drop_none:
            items.append(value)
    return items


def fan_out_counted(values: list[Any], drop_none: bool) -> tuple[list[Any], list[int]]:
    """``fan_out`` and how many items each value became."""
    items: list[Any] = []
    counts: list[int] = []
    for value in values:
        if type(value) is Multiple:
            made = [x for x in value.items if x is not None] if drop_none else value.items
            items += made
            counts.append(len(made))
        elif value is not None or not drop_none:
            items.append(value)
            counts.append(1)
        else:
            counts.append(0)
    return items, counts
