"""PlainCall: a plain function of the items used as a Worker function (``plain=True``).

A Worker function takes the inbox first, ``f(inbox, *args)``; a plain function takes the
items themselves, ``f(x)`` for a Piper with one input and ``f(x, y)`` for a join.
``Worker(f, plain=True)`` (or ``Piper(f, plain=True)``) wraps ``f`` in a ``PlainCall``, which
spreads the inbox: ``PlainCall(f)(inbox, *args) == f(*inbox, *args)``. The fingerprint of a
PlainCall is its function's, marked plain (papy._fingerprint), and ``Plumber.save`` writes it
back as ``plain=True`` (papy._save). Example::

    >>> PlainCall(pow)([7], 2)          # pow(7, 2)
    49
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

__all__ = ["PlainCall"]


def _function_name(func: object) -> str:
    name: str | None = getattr(func, "__name__", None)
    if name is None and isinstance(func, functools.partial):
        name = _function_name(func.func)
    return name or repr(func)


class PlainCall:
    """A plain function of the items as a Worker function: ``PlainCall(f)(inbox, *args)``
    is ``f(*inbox, *args)`` (``Worker(f, plain=True)`` makes it). In a composition, the
    previous result comes boxed as a 1-tuple, so ``f`` gets it as it is.

    ``__wrapped__`` is ``f``: ``inspect.signature`` (and so a cache key's argument names)
    sees ``f``'s parameters; the name and the fingerprint are ``f``'s, marked plain.
    """

    __slots__ = ("func", "__name__", "__wrapped__")

    def __init__(self, func: Callable[..., Any]):
        if not callable(func):
            raise TypeError(f"Worker(plain=True) takes callables, not {func!r}")
        self.func = func
        self.__name__ = _function_name(func)
        self.__wrapped__ = func

    def __call__(self, inbox: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        return self.func(*inbox, *args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return type(other) is PlainCall and other.func == self.func

    def __hash__(self) -> int:
        return hash((PlainCall, self.func))

    def __reduce__(self) -> tuple[Any, ...]:
        return (PlainCall, (self.func,))

    def __repr__(self) -> str:
        return f"PlainCall({self.__name__})"
