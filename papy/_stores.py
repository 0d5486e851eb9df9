"""Stores: the state a Reducer or a Frame keeps, and how it crosses processes.

    parent                                   pool worker (thread, process, remote host)
    ------                                   ------------------------------------------
    Reducer: merges partial stores    <----  a fresh store per chunk of items, folded
    Frame:   keeps one store per loop <--->  start()/end() called on it, returned

A store travels inside a ``Shipped`` result. Pickling tries ``pickle`` first and falls back
to ``dill`` (which papy's process and remote pools use for functions already): a store of
a class defined in the main module of a script, built in a worker from a factory that dill
shipped, pickles there only that way.
"""
from __future__ import annotations

import pickle
from typing import Any, Callable

__all__ = ["Object", "Shipped"]


class Object:
    """An attribute bag, the default store: ``Object(total=1).total == 1``.

    Example::

        >>> store = Object(total=1)
        >>> store.count = 2
        >>> store
        Object(total=1, count=2)
    """

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Object):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # unhashable, on purpose

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self.__dict__.items())
        return f"Object({fields})"


class Shipped:
    """A value that crosses processes pickled, or dill-pickled when pickle refuses it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Callable[..., Shipped], tuple[Any, ...]]:
        try:
            return (_unpickled, (pickle.dumps(self.value, 5),))
        except Exception:  # noqa: BLE001 - dill pickles what pickle cannot (or raises)
            import dill
            return (_undilled, (dill.dumps(self.value, recurse=True),))


def _unpickled(data: bytes) -> Shipped:
    return Shipped(pickle.loads(data))


def _undilled(data: bytes) -> Shipped:
    import dill
    return Shipped(dill.loads(data))
