"""Evaluate a batch of items: the code that runs inside every kind of worker.

This module is self-contained: it imports nothing from ``imap`` and only the standard
library (plus ``dill`` inside :func:`load_function`), so the remote backend can ship its
source to a plain ``rpyc_classic`` server where imap is not installed.

Wire formats (all pickled with protocol 5; dill only for functions):

    function payload   dill.dumps((func, args, kwargs), recurse=True)
    batch payload      pickle.dumps(items)                    a list
    reply payload      pickle.dumps((values, records, elapsed))
                       values: list, same length as items (None where an error is)
                       records: None or {position: error record}
                       elapsed: seconds spent evaluating, for the adaptive batch size
    error record       (kind, type_name, message, traceback_text, exception_bytes_or_None)
                       kind is 'exception' (raised by the function) or 'serialization'
"""
from __future__ import annotations

import importlib
import pickle
import time
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # nothing here at run time: this module's source is shipped as it is
    from types import ModuleType
    from typing import Protocol

    #: (kind, type_name, message, traceback_text, exception_bytes_or_None)
    ErrorRecord = tuple[str, str, str, str, bytes | None]
    #: an entry of @imports: 'module' (alternatives 'a,b'), or ('module', [names])
    ImportEntry = str | tuple[str, list[str]]

    class Progress(Protocol):
        """Where evaluate_tracked writes its position: a list, or a memoryview of int64."""

        def __setitem__(self, index: int, value: int, /) -> None: ...

#: the one pickle protocol of every message between imap and its workers (imported by the
#: backends from here: this module is on both sides of every kind of pool)
PROTOCOL = 5


# -- functions --------------------------------------------------------------------------

def bind_imports(func: Any, modules: Iterable[ImportEntry],
                 globals_: dict[str, Any] | None = None) -> None:
    """Import ``modules`` into ``globals_`` (default: the function's globals).

    ``func`` is a Python function (its ``__globals__`` and ``__qualname__`` are used).

    ``modules`` holds strings (``'re'``, ``'os.path'`` bound as ``path``, alternatives
    ``'json,simplejson'`` tried left to right and bound under the first one's name) or
    pairs ``(module, [names])`` (the module is bound under its last component and each
    name is bound from it). A module that cannot be imported raises ImportError naming it.
    """
    namespace: dict[str, Any] = func.__globals__ if globals_ is None else globals_
    for entry in modules:
        names: tuple[str, ...]
        if isinstance(entry, str):
            module, names = entry, ()
        else:
            module, names = entry[0], tuple(entry[1] or ())
        alternatives = [m.strip() for m in module.split(",") if m.strip()]
        if not alternatives:
            raise ImportError(f"@imports: empty module name in {entry!r}")
        bind_as = alternatives[0].rsplit(".", 1)[-1]
        loaded: ModuleType | None = None
        errors: list[str] = []
        for name in alternatives:
            try:
                loaded = importlib.import_module(name)
                break
            except ImportError as exc:
                errors.append(f"{name}: {exc}")
        if loaded is None:
            raise ImportError(
                f"@imports of {getattr(func, '__qualname__', func)!r}: cannot import "
                f"{' or '.join(alternatives)} ({'; '.join(errors)}); install it on this host "
                f"or remove it from @imports", name=alternatives[0])
        namespace[bind_as] = loaded
        for attr in names:
            try:
                namespace[attr] = getattr(loaded, attr)
            except AttributeError:
                try:
                    namespace[attr] = importlib.import_module(f"{loaded.__name__}.{attr}")
                except ImportError:
                    raise ImportError(f"@imports: {loaded.__name__} has no name {attr!r}",
                                      name=f"{loaded.__name__}.{attr}") from None


def make_call(func: Callable[..., Any], args: tuple[Any, ...] = (),
              kwargs: dict[str, Any] | None = None) -> Callable[[Any], Any]:
    """Return a one-argument callable evaluating ``func(item, *args, **kwargs)``."""
    if not args and not kwargs:
        return func
    keywords = kwargs or {}
    return lambda item: func(item, *args, **keywords)


def load_function(payload: bytes) -> Callable[[Any], Any]:
    """Rebuild ``(func, args, kwargs)`` from a dill payload and redo its @imports."""
    import dill
    func, args, kwargs = dill.loads(payload)
    modules = getattr(func, "imports", None)
    if modules:
        bind_imports(func, modules)
    return make_call(func, args, kwargs)


# -- evaluation -------------------------------------------------------------------------

def evaluate(call: Callable[[Any], Any], items: list[Any]
             ) -> tuple[list[Any], dict[int, BaseException] | None, float]:
    """Evaluate ``call`` on each item; return ``(values, errors, elapsed)``.

    ``errors`` is None or ``{position: exception}``; an item that raised holds None in
    ``values``. The loop runs in C (``list.extend`` over ``map``) until an exception, which
    is recorded before the same ``map`` iterator goes on with the next item.

    A callable whose class defines ``call_batch(items) -> (values, errors)`` (same
    meaning; ``imap.protocols.BatchFunction``, recognised by its shape so that this module
    imports nothing) is given the whole batch instead; an exception it raises is every
    item's error.
    """
    started = time.perf_counter()
    values: list[Any]
    errors: dict[int, BaseException] | None
    batch = getattr(type(call), "call_batch", None)
    if batch is not None:
        try:
            values, errors = batch(call, items)
            if len(values) != len(items):
                raise RuntimeError(f"{type(call).__name__}.call_batch returned "
                                   f"{len(values)} values for {len(items)} items")
        except BaseException as exc:  # noqa: BLE001 - the whole batch's error
            values, errors = [None] * len(items), dict.fromkeys(range(len(items)), exc)
        return values, errors, time.perf_counter() - started
    values, errors = [], None
    mapped = map(call, items)
    while True:
        try:
            values.extend(mapped)
            break
        except BaseException as exc:  # noqa: BLE001 - every exception is an item's result
            if errors is None:
                errors = {}
            errors[len(values)] = exc
            values.append(None)
    return values, errors, time.perf_counter() - started


def evaluate_tracked(call: Callable[[Any], Any], items: list[Any], progress: Progress
                     ) -> tuple[list[Any], dict[int, BaseException] | None, float]:
    """Like :func:`evaluate`, writing each item's position to ``progress[0]`` and the time
    it started (``time.monotonic_ns()``) to ``progress[1]`` first.

    The owner reads ``progress`` after the worker died to know which item killed it, and
    while it runs to know how long the current item has been running.
    """
    started = time.perf_counter()
    values: list[Any] = []
    errors: dict[int, BaseException] | None = None
    clock = time.monotonic_ns
    for position, item in enumerate(items):
        progress[1] = clock()
        progress[0] = position
        try:
            values.append(call(item))
        except BaseException as exc:  # noqa: BLE001
            if errors is None:
                errors = {}
            errors[position] = exc
            values.append(None)
    progress[0] = -1
    return values, errors, time.perf_counter() - started


# -- error records and replies ----------------------------------------------------------

def error_record(exc: BaseException, kind: str = "exception", message: str | None = None
                 ) -> ErrorRecord:
    """Describe ``exc`` as a picklable tuple (see the module docstring)."""
    exc_bytes: bytes | None
    try:
        exc_bytes = pickle.dumps(exc, PROTOCOL)
        pickle.loads(exc_bytes)  # an exception whose __init__ signature breaks unpickling
    except Exception:  # noqa: BLE001
        exc_bytes = None
    tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return (kind, type_name, str(exc) if message is None else message, tb_text, exc_bytes)


def serialization_record(what: str, exc: BaseException) -> ErrorRecord:
    """An error record for something that could not be (un)pickled."""
    message = f"{what}: {type(exc).__name__}: {exc}"
    return ("serialization", "imap.SerializationError", message,
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), None)


def _dumps(obj: object) -> bytes:
    return pickle.dumps(obj, PROTOCOL)


def encode_reply(values: list[Any], errors: dict[int, BaseException] | None, elapsed: float,
                 task: int | None = None, start: int = 0,
                 dumps: Callable[[object], bytes] = _dumps) -> bytes:
    """Pickle a batch's results; a result that cannot be pickled becomes an error record.

    ``dumps`` pickles the reply (the process backend passes one that puts large buffers
    into shared memory).
    """
    records: dict[int, ErrorRecord] | None = None
    if errors:
        records = {pos: error_record(exc) for pos, exc in errors.items()}
    try:
        return dumps((values, records, elapsed))
    except Exception:  # noqa: BLE001 - find the culprits one by one
        pass
    records = dict(records or {})
    clean = list(values)
    for pos, value in enumerate(values):
        if pos in records:
            continue
        try:
            pickle.dumps(value, PROTOCOL)
        except Exception as exc:  # noqa: BLE001
            clean[pos] = None
            records[pos] = serialization_record(
                f"the result of item {start + pos} of task {task} cannot be pickled", exc)
    try:
        return dumps((clean, records, elapsed))
    except Exception as exc:  # noqa: BLE001 - e.g. an error record itself
        records = {pos: serialization_record(
            f"the reply for items {start}..{start + len(values) - 1} of task {task} cannot be "
            f"pickled", exc) for pos in range(len(values))}
        return pickle.dumps(([None] * len(values), records, elapsed), PROTOCOL)


def decode_items(payload: bytes, task: int | None = None, start: int = 0
                 ) -> tuple[list[Any] | None, ErrorRecord | None]:
    """Unpickle a batch; on failure return ``(None, record)`` so the owner can split it."""
    try:
        return pickle.loads(payload), None
    except Exception as exc:  # noqa: BLE001
        return None, serialization_record(
            f"the batch at item {start} of task {task} cannot be unpickled", exc)
