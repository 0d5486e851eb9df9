"""Worker: a composition of user functions that follows the *inbox* convention.

A Piper evaluates its Worker once per item. The Worker receives an *inbox*: a list with one
element per upstream input (``inbox[0]`` for a Piper with one input, ``inbox[i]`` for a
join). The first function gets the inbox itself, each later function gets the previous
result boxed as a 1-tuple, and the last result is returned bare::

    Worker((f, g))(inbox)  ==  g((f(inbox),))

Errors are values, never raised: an exception raised by a function is returned as a
``WorkerError(exception, function_name, inbox)``; an inbox that already holds an upstream
``PiperError`` is not evaluated and ``PiperError(*those_errors)`` is returned.

Plain functions of the items, ``f(x)`` or ``f(x, y)`` for a join, need no wrapper:
``Worker(f, plain=True)`` (or ``Piper(f, plain=True)``) calls ``f(*inbox, *arguments)``, and
each later function of a composition gets the previous result as it is (papy._plain)::

    Worker((f, g), plain=True)(inbox)  ==  g(f(*inbox))

``map_stage`` evaluates a Worker over a whole batch with the same results, the loop in C;
where a Worker runs, it is called through a TimedCall (papy._timed).
"""
from __future__ import annotations

import functools
import inspect
import itertools
import os
import traceback
import types
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Sequence, TypeGuard

from ._errors import PiperError, WorkerError
from ._plain import PlainCall, _function_name

if TYPE_CHECKING:
    from ._cache import Cache
    from ._cache_record import CacheRecord
    from ._cache_worker import WorkerCache

#: what ``map_stage`` returns: the results, and ``{position: exception}`` for what was raised
#: and is not an Exception (None: nothing was)
Raised = dict[int, BaseException] | None

__all__ = ["Worker"]

_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                   types.BuiltinMethodType, types.MethodWrapperType, functools.partial)


def _is_function(obj: object) -> TypeGuard[Callable[..., Any]]:
    # a function decorated by a papy.Cache (papy._cache_function.CachedFunction) is one too
    return isinstance(obj, _FUNCTION_TYPES) or hasattr(obj, "__papy_fingerprint_of__")


class Worker:
    """Compose functions left to right over an inbox; errors are returned as values.

    ``Worker(functions, arguments=None, kwargs=None, name=None, cache=None)`` accepts:

    - one function, with one argument tuple and one kwargs dict:
      ``Worker(grep, ('papy',))`` evaluates ``grep(inbox, 'papy')``;
    - a sequence of functions with one argument tuple and one kwargs dict each:
      ``Worker((f, g), ((1,), ()), ({}, {'k': 2}))``;
    - a Worker (a copy of its functions and arguments), or a sequence of Workers (and
      functions), concatenated in order.

    Anything else is a TypeError. Workers are compared by their functions and arguments
    and are not hashable. ``__name__`` is the function names joined by ``'>'``.

    ``plain=True``: the functions are plain functions of the items, not of the inbox: the
    first is called as ``f(*inbox, *arguments, **kwargs)`` -- ``f(x)`` for a Piper with
    one input, ``f(x, y)`` for a join of two -- and each later one gets the previous result
    as it is. Any callable will do (``Worker(float, plain=True)``). Example::

        >>> Worker(pow, (2,), plain=True)([7])          # pow(7, 2)
        49

    ``cache``: a ``papy.Cache``; each inbox is looked up there first (key: the functions'
    fingerprints, the arguments, the inbox's content) and a result is stored before it is
    returned; error items are never stored (docs/cache.md). A copy of a cached Worker
    keeps its cache unless another is given.

    Example::

        >>> def plus(inbox, n): return inbox[0] + n
        >>> def double(inbox): return inbox[0] * 2
        >>> Worker((plus, double), ((1,), ()))([20])
        42
    """

    # equal Workers are interchangeable, but they are mutable containers
    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # unhashable, on purpose

    def __init__(self, functions: Callable[..., Any] | Worker | Sequence[Any],
                 arguments: Iterable[Any] | None = None,
                 kwargs: dict[str, Any] | Iterable[dict[str, Any] | None] | None = None,
                 name: str | None = None, cache: Cache | None = None, plain: bool = False):
        if not isinstance(plain, bool):
            raise TypeError(f"Worker plain must be True or False, not {plain!r}")
        task: Sequence[Callable[..., Any]]
        args: Sequence[tuple[Any, ...]]
        kws: Sequence[dict[str, Any]]
        if isinstance(functions, Worker):
            if plain:
                raise TypeError("Worker(plain=True) takes functions; a Worker keeps the "
                                "convention it was made with")
            task, args, kws = functions.task, functions.args, functions.kwargs
        elif _is_function(functions) or (plain and callable(functions)):
            task = (PlainCall(functions) if plain else functions,)
            args = (_as_tuple(arguments, "arguments"),)
            kws = (_as_dict(kwargs, "kwargs"),)
        elif isinstance(functions, (list, tuple)) and functions:
            task, args, kws = _from_sequence(functions, arguments, kwargs, plain)
        else:
            raise TypeError(f"Worker takes a function, a Worker or a non-empty sequence of "
                            f"them, not {functions!r}")
        self.task: tuple[Callable[..., Any], ...] = tuple(task)
        self.args: tuple[tuple[Any, ...], ...] = tuple(args)
        self.kwargs: tuple[dict[str, Any], ...] = tuple(kws)
        for func, arg, kw in zip(self.task, self.args, self.kwargs, strict=True):
            if not isinstance(functions, Worker) and type(func) is not PlainCall:
                _check_signature(func, arg, kw)
        self._single: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = \
            (self.task[0], self.args[0], self.kwargs[0]) if len(self.task) == 1 \
            else None     # the common case, without the boxing of a composition
        self._bare: Callable[..., Any] | None = self.task[0] if len(self.task) == 1 \
            and not self.args[0] and not self.kwargs[0] else None  # one function of the inbox
        self.__name__ = ">".join(_function_name(f) for f in self.task)
        self.name = name if name is not None else f"{self.__name__}_{id(self)}"
        self.cache: Cache | None = None           # see _use_cache
        self._cached: WorkerCache | None = None
        if cache is None and isinstance(functions, Worker):
            cache = functions.cache         # a copy of a cached Worker is cached
        if cache is not None:
            self._use_cache(cache)

    def _use_cache(self, cache: Cache) -> None:
        """Consult ``cache`` for every inbox (papy._cache_worker), where the Worker runs.
        The fast paths that call the function directly (``_bare``: Worker.__call__,
        TimedCall, BoxingCall, FusedCall, map_stage) are off for a cached Worker."""
        from ._cache_worker import WorkerCache
        self._cached = WorkerCache(self, cache)     # copies self while still uncached
        self.cache = cache
        self._bare = None

    @property
    def cache_record(self) -> CacheRecord | None:
        """The per-item record of a cached Worker where it runs (``take()``: the counts
        of executed, cached, failed and upstream-failed items since the last take), or
        None without a cache. See papy._cache_record."""
        return self._cached.record if self._cached is not None else None

    def __call__(self, inbox: Sequence[Any]) -> Any:
        bare = self._bare
        if bare is not None and type(inbox) is list and len(inbox) == 1 \
                and not isinstance(inbox[0], _SUSPECT):   # the common case, per item
            try:
                return bare(inbox)
            except Exception as exc:  # noqa: BLE001 - every user error becomes a value
                return _worker_error(exc, bare, inbox)
        return self._evaluate(inbox)

    def _evaluate(self, inbox: Sequence[Any]) -> Any:
        if self._cached is not None:
            return self._cached(inbox)
        try:
            for element in inbox:
                if isinstance(element, _SUSPECT):
                    errors = _upstream_errors(inbox)
                    if errors:
                        return PiperError(*errors)
                    break
        except TypeError:
            pass        # not iterable: the function will say what it thinks of it
        if self._single is not None:
            func, args, kwargs = self._single
            try:
                return func(inbox, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every user error becomes a value
                return _worker_error(exc, func, inbox)
        outbox = inbox
        for func, args, kwargs in zip(self.task, self.args, self.kwargs, strict=True):
            try:
                outbox = (func(outbox, *args, **kwargs),)
            except Exception as exc:  # noqa: BLE001 - every user error becomes a value
                return _worker_error(exc, func, inbox)
        return outbox[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Worker):
            return NotImplemented
        return (self.task, self.args, self.kwargs) == (other.task, other.args, other.kwargs)

    def __repr__(self) -> str:
        return f"{self.__name__}({id(self)})"


def _worker_error(exc: Exception, func: object, inbox: Any) -> WorkerError:
    error = WorkerError(exc, _function_name(func), inbox)
    error.traceback_text = _user_traceback(exc)
    return error


_OWN_FOLDER = os.path.dirname(os.path.abspath(__file__))


def _user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` from the user's function on: papy's own frames on top (the
    Worker's call of the function) are left out (all of them for a builtin function)."""
    tb = exc.__traceback__
    while tb is not None and os.path.dirname(tb.tb_frame.f_code.co_filename) == _OWN_FOLDER:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _check_signature(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> None:
    """A TypeError now, not a WorkerError per item later, when ``func`` cannot be called as
    ``func(inbox, *args, **kwargs)``. Functions without a signature (some builtins) pass."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        name = _function_name(func)
        given = ", ".join(["inbox"] + [repr(a) for a in args] +
                          [f"{k}={v!r}" for k, v in kwargs.items()])
        raise TypeError(
            f"Worker: function {name!r}{signature} cannot be called as {name}({given}): "
            f"{exc}. A worker function takes the inbox first, then the arguments and "
            f"keyword arguments given to the Worker: define it as "
            f"'def {name}(inbox, ...)' or change the arguments given to the Worker; a plain "
            f"function of the items (f(x), f(x, y) for a join) takes plain=True"
        ) from None


def _as_tuple(arguments: object, what: str) -> tuple[Any, ...]:
    if arguments is None:
        return ()
    if isinstance(arguments, (str, bytes)) or not isinstance(arguments, Iterable):
        raise TypeError(f"Worker {what} must be a tuple of positional arguments, "
                        f"not {arguments!r}")
    return tuple(arguments)


def _as_dict(kwargs: object, what: str) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"Worker {what} must be a dict of keyword arguments, not {kwargs!r}")
    return dict(kwargs)


def _from_sequence(functions: Sequence[Any], arguments: Iterable[Any] | None,
                   kwargs: Iterable[Any] | None, plain: bool = False
                   ) -> tuple[list[Callable[..., Any]], list[tuple[Any, ...]],
                              list[dict[str, Any]]]:
    count = len(functions)
    argument_list: list[Any] = [None] * count if arguments is None else list(arguments)
    kwargs_list: list[Any] = [None] * count if kwargs is None else list(kwargs)
    if len(argument_list) != count or len(kwargs_list) != count:
        raise TypeError(f"Worker got {count} functions, {len(argument_list)} argument tuples "
                        f"and {len(kwargs_list)} kwargs dicts; give one of each per function")
    task: list[Callable[..., Any]] = []
    args: list[tuple[Any, ...]] = []
    kws: list[dict[str, Any]] = []
    for func, arg, kw in zip(functions, argument_list, kwargs_list, strict=True):
        if isinstance(func, Worker):
            task += func.task
            args += func.args
            kws += func.kwargs
        elif _is_function(func) or (plain and callable(func)):
            task.append(PlainCall(func) if plain else func)
            args.append(_as_tuple(arg, "arguments"))
            kws.append(_as_dict(kw, "kwargs"))
        else:
            raise TypeError(f"Worker takes functions or Workers, not {func!r}")
    return task, args, kws


_SUSPECT = (PiperError, list)      # an upstream error, or a consume group that may hold one


def _upstream_errors(inbox: Iterable[Any]) -> list[PiperError]:
    """The PiperErrors an inbox holds (one level deep, to see into ``consume`` groups)."""
    errors: list[PiperError] = []
    for element in inbox:
        if isinstance(element, PiperError):
            errors.append(element)
        elif type(element) is list:
            errors.extend(e for e in element if isinstance(e, PiperError))
    return errors



def map_stage(worker: Callable[[Any], Any], bare: Callable[..., Any] | None,
              values: list[Any], boxed: bool, kinds: AbstractSet[type] | None = None
              ) -> tuple[list[Any], Raised]:
    """``worker`` over a batch: ``(results, raised)``, user errors as values (WorkerError).
    ``values`` are the inboxes or, ``boxed``, the items (each evaluated as ``[item]``).
    With a ``bare`` function (a Worker of one function without arguments), or a Worker of
    one function with arguments, and no item that could hold an upstream error, the
    function is called directly. The loop runs in C (``list.extend`` over ``map``), or in
    bytecode where each item is boxed, resumed after an exception; ``raised`` is None or
    ``{position: exception}`` for what is not an Exception (SystemExit, ...): those
    positions hold None, as the per-item path would fail only that item. ``kinds``: what
    the caller knows of the exact types of the items (``boxed``: the values; else the
    elements of the inboxes), a set that holds each one's: none is checked again where
    they are all NEVER_SUSPECT, and a cache need not scan them for its keys."""
    cached: WorkerCache | None = getattr(worker, "_cached", None)
    if cached is not None:          # a cached Worker: looked up and stored per batch
        return cached.call_batch(values, boxed, kinds)
    clean = kinds is not None and NEVER_SUSPECT.issuperset(kinds)
    if not boxed:
        if bare is not None and (clean or _plain_inboxes(values)):
            return _resumable(bare, values, False)      # the Worker would call it so
        return _resumable(worker, values, False)
    # one function, maybe with arguments (of a Worker, not a subclass): called as it would
    single = worker._single if type(worker) is Worker else None
    if (bare is None and single is None) or (not clean and any_instance(values, _SUSPECT)):
        return _resumable(worker, values, True)
    if bare is None:
        assert single is not None
        func, args, kwargs = single
        return _resumable(func, values, True, extra=(args, kwargs))
    if type(bare) is PlainCall:         # f(item): no inbox list is made at all
        return _resumable(bare.func, values, False, box_errors=True)
    return _resumable(bare, values, True)


# exact types that are never an error item, nor a list that could hold one
NEVER_SUSPECT = frozenset({int, float, complex, str, bytes, bool, type(None), tuple, dict})
_LISTS = frozenset({list})


def _plain_inboxes(inboxes: list[Any]) -> bool:
    """Are these inboxes lists of NEVER_SUSPECT values only (a join's, without an upstream
    error or a consume group)? Two C-level scans of the types."""
    return _LISTS.issuperset(map(type, inboxes)) and NEVER_SUSPECT.issuperset(
        map(type, itertools.chain.from_iterable(inboxes)))


def any_instance(values: list[Any], types: type | tuple[type, ...]) -> bool:
    """Is any of ``values`` an instance of ``types`` (which holds no NEVER_SUSPECT type)?
    One C-level check of the exact types first, which settles the common batches."""
    return not NEVER_SUSPECT.issuperset(map(type, values)) and any(
        map(isinstance, values, itertools.repeat(types)))


def _resumable(func: Callable[..., Any], values: list[Any], boxed: bool,
               box_errors: bool = False,
               extra: tuple[tuple[Any, ...], dict[str, Any]] | None = None
               ) -> tuple[list[Any], Raised]:
    """``box_errors``: ``values`` are items given to ``func`` as they are (a plain
    function), and a WorkerError's inbox is ``[item]`` as for the other paths.
    ``extra``: ``(args, kwargs)`` that ``func`` takes after each inbox (``boxed`` only)."""
    results: list[Any] = []
    raised: Raised = None
    items = iter(values)        # shared by the passes: a pass resumes after a raise
    append = results.append
    while True:
        try:
            if extra is not None:
                args, kwargs = extra
                for item in items:
                    append(func([item], *args, **kwargs))
            elif boxed:     # a loop in bytecode boxes and calls faster than two maps
                for item in items:
                    append(func([item]))
            else:
                results.extend(map(func, items))
            return results, raised
        except Exception as exc:  # noqa: BLE001 - every user error becomes a value
            inbox = values[len(results)]
            results.append(_worker_error(exc, func, [inbox] if boxed or box_errors
                                         else inbox))
        except BaseException as exc:  # noqa: BLE001 - that item's error, as per item
            raised = raised or {}
            raised[len(results)] = exc
            results.append(None)
