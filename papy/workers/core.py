"""Flow worker functions: pass, select, zip and join the inputs of a Piper.

Every function follows the inbox convention: ``inbox`` holds one element per upstream
input (``inbox[0]`` for a Piper with one input, ``inbox[i]`` for a join). They need no
module, so they run unchanged in threads, processes and on remote hosts.

Selections by a sequence of indices ``s`` (``spasser``, ``szipper``, ``sjoiner``) return
the inputs in the order ``s`` asks for (the original returned them in inbox order).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

__all__ = ["plugger", "ipasser", "npasser", "spasser", "nzipper", "szipper",
           "njoiner", "sjoiner"]

T = TypeVar("T")


def plugger(inbox: Sequence[Any]) -> None:
    """Return None, whatever the inputs: a plug at the end of a branch.

    >>> plugger(['anything']) is None
    True
    """
    return None


def ipasser(inbox: Sequence[T], i: int = 0) -> T:
    """Return the ``i``-th input (the first by default).

    >>> ipasser(['a', 'b', 'c'], 1)
    'b'
    """
    return inbox[i]


def npasser(inbox: Sequence[T], n: int | None = None) -> Sequence[T]:
    """Return the first ``n`` inputs (all of them by default), as ``inbox[:n]``.

    >>> npasser(['a', 'b', 'c'], 2)
    ['a', 'b']
    """
    return inbox[:n]


def spasser(inbox: Sequence[T], s: Sequence[int] | None = None) -> list[T]:
    """Return the inputs whose indices are in ``s``, in the order of ``s`` (all by default).

    >>> spasser(['a', 'b', 'c'], (2, 0))
    ['c', 'a']
    """
    return list(inbox) if s is None else [inbox[i] for i in _indices(s, "spasser")]


def nzipper(inbox: Sequence[Iterable[Any]], n: int | None = None) -> tuple[Any, ...]:
    """Return the first tuple of ``zip(*inbox[:n])``: the first element of each of the
    first ``n`` inputs (of all inputs by default).

    >>> nzipper([(1, 2), (3, 4)])
    (1, 3)
    """
    first = next(zip(*inbox[:n], strict=False), None)  # as long as the shortest input
    if first is None:
        raise IndexError(f"nzipper: nothing to zip in the first {n} inputs of {inbox!r}; "
                         f"every input must be a non-empty sequence")
    return first


def szipper(inbox: Sequence[Iterable[Any]], s: Sequence[int]) -> list[tuple[Any, ...]]:
    """Return ``zip`` of the inputs whose indices are in ``s`` (in the order of ``s``), as a
    list of tuples.

    >>> szipper([(1, 2), 'skipped', (3, 4)], (0, 2))
    [(1, 3), (2, 4)]
    """
    return list(zip(*(inbox[i] for i in _indices(s, "szipper")), strict=False))


def njoiner(inbox: Sequence[str], n: int | None = None, join: str = "") -> str:
    """Join the first ``n`` inputs (all by default) with the string ``join``.

    >>> njoiner(['a', 'b', 'c'], 2, '-')
    'a-b'
    """
    return join.join(inbox[:n])


def sjoiner(inbox: Sequence[str], s: Sequence[int], join: str = "") -> str:
    """Join the inputs whose indices are in ``s`` (in the order of ``s``) with ``join``.

    >>> sjoiner(['a', 'b', 'c'], (2, 0), '+')
    'c+a'
    """
    return join.join(inbox[i] for i in _indices(s, "sjoiner"))


def _indices(s: object, function: str) -> Iterable[int]:
    if isinstance(s, int) or not isinstance(s, Iterable):
        raise TypeError(f"{function}: s must be a sequence of input indices such as (0, 2), "
                        f"not {s!r}")
    return s
