"""papy.inline's user functions: their arity checked as job_stream counts it, and the
adapters that call them in job_stream's conventions on papy's Pipers.

At decoration time ``check_arity`` makes a wrong arity a ValueError that names the
function; at run time ``job_call``, ``frame_call`` and ``fold_call`` wrap a job, a frame's
start or end, and a reduce's fold as the functions a Worker, a Frame and a Reducer call
(an ``Args`` item is called as ``f(*a, **k)``).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from ._fanout import Multiple, as_items, call_with

__all__ = ["name_of", "check_arity", "job_call", "frame_call", "fold_call"]


def name_of(func: Any) -> str:
    """How error messages and Pipers name a user function."""
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def check_arity(kind: str, func: Any, count: int, at_least: bool) -> None:
    """ValueError unless ``func`` takes ``count`` positional arguments (``at_least``: that
    many or more); ``*args`` takes any number."""
    if not callable(func):
        raise ValueError(f"Work.{kind}: {func!r} is not a function")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return                  # no signature to read (some builtins): called as it is
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(1 for p in positional if p.default is p.empty)
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    takes = len(positional)
    if at_least:
        fits = takes >= count or varargs
    else:           # as job_stream counts: parameters with defaults too
        fits = required <= count if varargs else takes == count
    if not fits:
        what = "at least" if at_least else "exactly"
        raise ValueError(f"Work.{kind}: function {name_of(func)!r} must take {what} {count} "
                         f"argument{'s' if count != 1 else ''}; it takes {takes}"
                         f"{' (and *args)' if varargs else ''}")


def job_call(func: Callable[..., Any]) -> Callable[[list[Any]], Any]:
    """A job as a Worker function: ``f(item)``, or ``f(*a, **k)`` for an Args item."""
    def job(inbox: list[Any]) -> Any:
        return call_with(func, inbox[0])
    job.__name__ = job.__qualname__ = getattr(func, "__name__", "job")
    return job


def frame_call(func: Callable[..., Any]) -> Callable[[Any, Any], Any]:
    """A frame's start or end: ``f(store, item)``, or ``f(store, *a, **k)`` for Args."""
    def frame(store: Any, item: Any) -> Any:
        return call_with(func, item, store)
    frame.__name__ = frame.__qualname__ = getattr(func, "__name__", "frame")
    return frame


def fold_call(func: Callable[..., Any]) -> Callable[[Any, list[Any], list[Any]], Any]:
    """job_stream's reduce adapter: ``f(store, [w], [])`` per item, ``f(store, [], [o])``
    per partial store; what the calls return, together, is recurred."""
    def fold(store: Any, works: list[Any], others: list[Any]) -> Any:
        recurred: list[Any] = []
        for work in works:
            recurred += as_items(func(store, [work], []))
        for other in others:
            recurred += as_items(func(store, [], [other]))
        return Multiple.of(recurred) if recurred else None
    fold.__name__ = fold.__qualname__ = getattr(func, "__name__", "fold")
    return fold
