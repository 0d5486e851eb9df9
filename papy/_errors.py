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
first of two Pipers reaches the output as ``PiperError(PiperError(WorkerError(TypeError)))``,
so ``err.args[0].args[0].args[0]`` is the original TypeError.

Failures that are not about one item (inputs of a join with different lengths, an input
iterable that raised, an exception in a background thread) are collected by the Plumber and
raised by ``wait()`` / ``chinkup()``; several at once come as an ``ExceptionGroup``.
"""
from __future__ import annotations

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
    def exception(self) -> BaseException:
        return self.args[0] if self.args else None

    @property
    def function(self) -> str:
        return self.args[1] if len(self.args) > 1 else ""

    @property
    def inbox(self):
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
    the upstream PiperError(s) an inbox held.
    """


class DaggerError(PapyError):
    """The pipeline graph is invalid (unknown Piper, cycle, Piper still in use, ...)."""


class PlumberError(PapyError):
    """An illegal transition of the Plumber state machine, or a save/load failure."""


def _short_repr(value, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
