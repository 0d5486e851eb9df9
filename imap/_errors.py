"""Exceptions of the imap package.

    Exception
     +-- IMapError                 root of the errors imap itself raises
     |    +-- WorkerDiedError      a worker process died or a remote connection was lost
     |    |                        while it evaluated the item (raised in that item's place)
     |    +-- SerializationError   an item, a result or a function could not be pickled or
     |    |                        unpickled (raised in that item's place, naming task and index)
     |    +-- WorkerStartError     a worker could not be started or reached (raised by start())
     |         +-- BrokenPoolError (also a WorkerDiedError) the pool's workers die before
     |                              doing any work: raised by start() and in place of every
     |                              item the pool can no longer evaluate
     +-- RemoteTraceback           carries the worker-side traceback; set as __cause__ of an
                                   exception re-raised by IMap.next()

A user function's own exception is re-raised as itself (same type, same args); only
exceptions that cannot be pickled back from a process or a remote host are replaced by a
RemoteError that keeps their type name and message. Every error in an item's place carries
``.item`` (a copy of the input it failed on) and ``.traceback`` (the worker-side traceback
text, or the error's own description): ``decorate``.

`TimeoutError` is the builtin one.
"""
from __future__ import annotations

import copy
import logging
import pickle
import traceback
import warnings
from typing import Any


class IMapError(Exception):
    """Root of the exceptions raised by imap itself."""


class WorkerDiedError(IMapError):
    """The worker evaluating an item died (exit, signal) or its connection dropped.

    Attributes: ``worker`` (a description such as ``'process 1234'`` or ``'host:18812'``),
    ``exitcode`` (the exit code, negative for a signal, None when unknown), ``task`` and
    ``index`` of the item.
    """

    def __init__(self, message: str, worker: str = "", exitcode: int | None = None,
                 task: int | None = None, index: int | None = None):
        super().__init__(message)
        self.worker = worker
        self.exitcode = exitcode
        self.task = task
        self.index = index

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), (self.args[0], self.worker, self.exitcode, self.task, self.index))


class SerializationError(IMapError):
    """An item, a result or a function could not be pickled or unpickled."""


class WorkerStartError(IMapError):
    """A worker could not be started (a process) or reached (a remote host)."""


class BrokenPoolError(WorkerStartError, WorkerDiedError):
    """The pool is broken: its workers die before they do any work (a script that worker
    processes cannot import, a missing ``if __name__ == '__main__':`` guard, a crash while
    a worker starts or loads a function), or none is left.

    The message names the first failure's cause (exit code, signal, or what the worker was
    doing) and the remedy. Raised by ``start()`` and in place of every item the pool can no
    longer evaluate, instead of one dead worker per item.
    """

    def __init__(self, message: str, worker: str = "", exitcode: int | None = None,
                 task: int | None = None, index: int | None = None):
        WorkerDiedError.__init__(self, message, worker, exitcode, task, index)


class RemoteError(IMapError):
    """Stands for an exception raised in a worker that could not be pickled back.

    ``type_name`` is the qualified name of the original exception's type.
    """

    def __init__(self, message: str, type_name: str = ""):
        super().__init__(message)
        self.type_name = type_name

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), (self.args[0], self.type_name))


class RemoteTraceback(Exception):  # noqa: N818 - a public name since the first release
    """The formatted traceback of an exception as it was raised inside a worker."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def attach_traceback(exc: BaseException, tb_text: str) -> BaseException:
    """Set ``exc.__cause__`` to the worker-side traceback (once)."""
    if not isinstance(exc.__cause__, RemoteTraceback):
        exc.__cause__ = RemoteTraceback('\n"""\n' + tb_text.rstrip("\n") + '\n"""')
    return exc


def rebuild_error(record: tuple[Any, ...]) -> BaseException:
    """Turn an error record received from a worker back into an exception object.

    ``record`` is ``(kind, type_name, message, traceback_text, exception_bytes)``, made by
    ``imap._evaluate.error_record`` on the worker side.
    """
    kind, type_name, message, tb_text, exc_bytes = record
    exc = None
    if exc_bytes is not None:
        try:
            exc = pickle.loads(exc_bytes)
        except Exception:  # noqa: BLE001 - any failure means: use the substitute below
            exc = None
    if exc is None:
        if kind == "serialization":
            exc = SerializationError(message)
        else:
            exc = RemoteError(f"{type_name}: {message} (the original exception could not be "
                              f"pickled back from the worker)", type_name)
    if tb_text:
        attach_traceback(exc, tb_text)
    return exc


class IMapWarning(RuntimeWarning):
    """Something that costs speed, bounds on memory, or a clean-up went wrong (a worker
    that cannot be replaced, a thread abandoned at stop). Shown once per message by
    Python's default warning filters; ``warnings.simplefilter('ignore', IMapWarning)``
    hides them."""


def warn_safely(message: str, stacklevel: int = 2) -> None:
    """``warnings.warn(message, IMapWarning)`` from any thread: where the filters turn
    warnings into errors (``-W error``, pytest's ``filterwarnings = error``), the warning is
    logged at WARNING instead of raising inside a background thread."""
    try:
        warnings.warn(message, IMapWarning, stacklevel=stacklevel + 1)
    except Warning:
        logging.getLogger(__name__).warning("%s", message)


_MISSING = object()


def decorate(errors: dict[int, BaseException], items: list[object]) -> None:
    """Say where each error came from: ``.item``, a copy of the input it failed on (the
    input itself when it cannot be copied), and ``.traceback``, the worker-side traceback
    text (also the exception's ``__cause__``, a RemoteTraceback) or, for an error the
    pool itself raised (a worker lost, an item timeout), its own description. Exceptions
    that refuse attributes are left as they are."""
    for position, exc in errors.items():
        if position < len(items) and getattr(exc, "item", _MISSING) is _MISSING:
            _set(exc, "item", _copy(items[position]))
        if getattr(exc, "traceback", _MISSING) is _MISSING:
            _set(exc, "traceback", traceback_text(exc))


def traceback_text(exc: BaseException) -> str:
    """The worker-side traceback of ``exc`` if it has one, else its own formatting."""
    cause = exc.__cause__
    if isinstance(cause, RemoteTraceback):
        return cause.tb.strip().strip('"').strip("\n")
    return "".join(traceback.format_exception(exc))


def _copy(item: object) -> object:
    try:
        return copy.copy(item)
    except Exception:  # noqa: BLE001 - then the input itself
        return item


def _set(exc: BaseException, name: str, value: object) -> None:
    try:
        setattr(exc, name, value)
    except (AttributeError, TypeError):
        pass
