"""``imap.execute(calls)``: the results of an iterable of calls, evaluated on an IMap pool
(papyros's ``dispatcher.execute``).

    calls (read lazily, bounded by the buffer) --> one IMap task (run_call) --> workers
    next(timeout=) <-- the task's results (completion order, or call order if ordered)

The pool is the caller's (started if it is not; left running) or a process pool made for
this call and stopped when the iterator ends, is closed, or is collected.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ._calls import run_call
from ._config import count as _count

if TYPE_CHECKING:
    from ._imap import IMap
    from ._results import TaskIterator

__all__ = ["ExecuteIterator", "execute"]


def execute(calls: Iterable[Any], *, pool: IMap[Any] | None = None, ordered: bool = False,
            timeout: float | None = None, chunksize: int | None = None) -> ExecuteIterator:
    """An iterator over the results of ``calls``: each a ``(func, args, kwargs)`` tuple
    (``(func, args)`` and ``(func,)`` too) or a callable without arguments such as a
    ``functools.partial``.

    ``pool``: an IMap (started if it is not, left running); default a process pool made
    for this call, stopped when the iterator ends or is closed. ``ordered``: results in
    the order of the calls (default: as they complete; the results of one batch keep
    their order). ``timeout``: the longest one ``next()`` waits, then TimeoutError (the
    iterator can be resumed). ``chunksize``: the number of calls per batch (default: it
    adapts). A call's exception is raised by ``next()`` in its place, with ``.item`` (the
    call) and ``.traceback`` (the worker's); the iteration goes on after it.

    Example::

        for square in execute((pow, (x, 2)) for x in range(10)):
            ...
    """
    from ._imap import IMap
    _count("chunksize", chunksize, None, minimum=1)
    if timeout is not None and (isinstance(timeout, bool) or
                                not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
    owned = pool is None
    imap = IMap(name="execute") if pool is None else pool
    try:
        handle = imap.add_task(run_call, calls, ordered=bool(ordered), batch_size=chunksize)
        if not imap.started:
            imap.start()
    except BaseException:
        if owned:
            imap.stop(forced=True)
        raise
    return ExecuteIterator(imap, handle, owned, timeout)


class ExecuteIterator:
    """What ``execute()`` returns: an iterator with ``close()``, also a context manager."""

    def __init__(self, imap: IMap[Any], handle: TaskIterator[Any], owned: bool,
                 timeout: float | None) -> None:
        self._handle = handle
        self.timeout = timeout
        self._closed = False
        self._finalizer = weakref.finalize(self, _finish, imap, handle, owned)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        try:
            return self._handle.next(timeout=self.timeout, block=True)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        """Stop: calls not evaluated yet are dropped; a pool made for this call is
        stopped. Later next() calls raise StopIteration. Idempotent."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<execute iterator on {self._handle._imap.name}{' (closed)' * self._closed}>"


def _finish(imap: IMap[Any], handle: TaskIterator[Any], owned: bool) -> None:
    if owned:
        imap.stop(forced=True)
    else:
        handle.remove()
