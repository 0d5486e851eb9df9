"""Exceptions of the papy package.

    Exception
     +-- PapyError            root of everything papy raises or passes along
          +-- WorkerError     a user function raised: *returned* by ``Worker(inbox)`` as a value,
          |                   args = (exception, function_name, inbox)
          +-- PiperError      an item that failed at a Piper (a WorkerError, a timeout, an
          |                   upstream PiperError, a bad ``produce`` result) travels downstream
          |                   as this *value*, args = (cause, ...); also raised by Piper methods
          |                   used in the wrong order (connect twice, next before start, ...)
          +-- DaggerError     the graph is invalid: unknown Piper, a cycle, a Piper that still
          |                   has downstream Pipers, ...
          +-- PlumberError    an illegal move of the Plumber's state machine (the message says
                              which state it is in), or a pipeline that cannot be saved/loaded

Errors that travel as values keep their cause chain in ``args``: an item that failed in the
first of two Pipers reaches the output as ``PiperError(PiperError(WorkerError(TypeError)))``.
No unwrapping is needed to read it: ``err.root_cause`` is the original TypeError,
``err.traceback_text`` its traceback where it was raised (a worker process or host
included), ``err.piper_name`` the Piper where the item failed, ``err.item`` the inbox it
failed on, and ``err.explain()`` all of that as text. The error item made where an item
first failed is its *origin* (``err.origins``: several when a join read several failed
items); the error items downstream only carry it along.

Failures that are not about one item (inputs of a join with different lengths, an input
iterable that raised, an exception in a background thread) are collected by the Plumber and
raised by ``wait()`` / ``chinkup()``; several at once come as an ``ExceptionGroup``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["PapyError", "WorkerError", "PiperError", "DaggerError", "PlumberError"]


class PapyError(Exception):
    """Root of the papy exceptions."""


class WorkerError(PapyError):
    """A function of a Worker raised; the Worker returns this instead of raising.

    ``args`` is ``(exception, function_name, inbox)``; the same values are available as
    ``exception``, ``function`` and ``inbox``. ``traceback_text`` holds the formatted
    traceback from the place it was raised (a worker process or host included), or ''.

    Example::

        >>> def first(inbox): return inbox[0] + 1
        >>> err = Worker(first)(['x'])   # 'x' + 1 raises TypeError
        >>> isinstance(err, WorkerError), type(err.exception).__name__, err.function
        (True, 'TypeError', 'first')
    """

    traceback_text = ""

    @property
    def exception(self) -> BaseException | None:
        """The exception the function raised (None: a WorkerError made without arguments)."""
        return self.args[0] if self.args else None

    @property
    def function(self) -> str:
        return self.args[1] if len(self.args) > 1 else ""

    @property
    def inbox(self) -> Any:
        return self.args[2] if len(self.args) > 2 else None

    def __str__(self) -> str:
        if len(self.args) < 3:
            return super().__str__()
        exc, function, inbox = self.args[:3]
        return (f"{type(exc).__name__}: {exc} (in function {function!r}, "
                f"inbox {_short_repr(inbox)})")


class PiperError(PapyError):
    """An item that failed at a Piper (passed downstream as a value), or a Piper misused.

    As a value, ``args[0]`` is the cause: a WorkerError, a TimeoutError, an imap error, or
    the upstream PiperError(s) an inbox held. What a user wants to know is read from it
    directly, however deep the chain (``origins``, ``root_cause``, ``traceback_text``,
    ``piper_name``, ``index``, ``item``, ``explain()``).

    Example::

        >>> err = PiperError(PiperError(WorkerError(ValueError('bad'), 'parse', ['x'])))
        >>> type(err.root_cause).__name__, err.item
        ('ValueError', ['x'])
    """

    # set by the run on an origin error item (papy._failures): where it failed, its
    # position among that Piper's results, the traceback when the cause is no WorkerError
    _piper_name: str | None = None
    _index: int | None = None
    _worker_traceback = ""

    @property
    def piper_name(self) -> str | None:
        """The name of the Piper where the (first) item failed (None: not known, e.g. for
        an error item made outside a run)."""
        return self.origins[0]._piper_name

    @property
    def index(self) -> int | None:
        """The position of the (first) failed item among the results of that Piper; the
        index of the input item when every Piper up to it maps items one to one."""
        return self.origins[0]._index

    @property
    def origins(self) -> list[PiperError]:
        """The error items made where the item first failed, in inbox order: ``[self]``
        for an origin; the upstream origins for an error item that only carries them
        (several when a join read several failed items; each appears once)."""
        found: list[PiperError] = []
        seen: set[int] = set()
        stack: list[PiperError] = [self]
        while stack:
            error = stack.pop()
            upstream = [a for a in error.args if isinstance(a, PiperError)]
            if not upstream:
                if id(error) not in seen:
                    seen.add(id(error))
                    found.append(error)
                continue
            stack.extend(reversed(upstream))
        return found

    @property
    def root_cause(self) -> BaseException:
        """The exception that made the (first) item fail: the user function's exception, a
        TimeoutError, an imap error (a worker that died, ...), or the origin error item
        itself when it has no exception inside (a join with inputs of different lengths)."""
        origin = self.origins[0]
        cause = origin.args[0] if origin.args else None
        if isinstance(cause, WorkerError):
            return cause.exception  # type: ignore[return-value]  # None only if made bare
        return cause if isinstance(cause, BaseException) else origin

    @property
    def traceback_text(self) -> str:
        """The traceback of ``root_cause`` as it was raised (in the worker process or on the
        remote host), or '' when there is none (a timeout, a worker that died)."""
        origin = self.origins[0]
        cause = origin.args[0] if origin.args else None
        if isinstance(cause, WorkerError) and cause.traceback_text:
            return cause.traceback_text
        return origin._worker_traceback

    @property
    def item(self) -> Any:
        """The inbox the (first) item failed on (``[x]`` for a Piper with one input), or
        None when it is not known (a timeout, a worker that died)."""
        cause = self.origins[0].args[0] if self.origins[0].args else None
        return cause.inbox if isinstance(cause, WorkerError) else None

    def explain(self) -> str:
        """Where, on what and why the item failed, with the worker-side traceback::

            piper 'parse' failed on item 3 (inbox ['x']): ValueError: ...
            Traceback (most recent call last): ...
        """
        blocks: list[str] = []
        for origin in self.origins:
            cause = origin.root_cause
            where = f"piper {origin.piper_name!r}" if origin.piper_name else "a piper"
            which = f" item {origin.index}" if origin.index is not None else " an item"
            inbox = origin.item
            on = f" (inbox {_short_repr(inbox)})" if inbox is not None else ""
            if cause is origin:
                text = f"{where} failed on{which}: {origin.args[0] if origin.args else ''}"
            else:
                text = f"{where} failed on{which}{on}: {type(cause).__name__}: {cause}"
            trace = origin.traceback_text
            blocks.append(text + ("\n" + trace.rstrip("\n") if trace else ""))
        return "\n".join(blocks)


class DaggerError(PapyError):
    """The pipeline graph is invalid (unknown Piper, cycle, Piper still in use, ...)."""


class PlumberError(PapyError):
    """An illegal transition of the Plumber state machine, or a save/load failure."""


def _short_repr(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
