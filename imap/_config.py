"""Validation of IMap's settings and tasks (clear errors at construction time), the
modules the fork server preloads (``preload``), and ``override_workers`` (``papy run
--dask``).

:func:`seconds` is the one validator of every number-of-seconds setting, in imap and in
papy (a Piper's ``timeout``): NaN, negatives, non-numbers and (unless allowed) infinities
are refused when the setting is made, instead of failing later inside a run.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import numbers
import threading
from collections.abc import Iterator
from typing import Any, Literal, overload

try:   # every process or remote pool ships functions with dill: imported with imap, not
    import dill  # noqa: F401 - not in a pool's start
except ImportError:   # a server host without dill still imports imap, to say it is missing
    pass

from .backends.base import TaskSpec, describe


def count(what: str, value: Any, default: Any, minimum: int) -> Any:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int >= {minimum} or None, not {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, not {value}")
    return value


@overload
def seconds(name: str, value: object, *, default: float, allow_zero: bool = True,
            allow_none: bool = True, infinite_is_none: Literal[False] = False) -> float: ...


@overload
def seconds(name: str, value: object, *, default: float | None = None,
            allow_zero: bool = True, allow_none: bool = True,
            infinite_is_none: bool = False) -> float | None: ...


def seconds(name: str, value: object, *, default: float | None = None,
            allow_zero: bool = True, allow_none: bool = True,
            infinite_is_none: bool = False) -> float | None:
    """``value`` as a number of seconds, or a clear error naming the setting ``name``.

    None gives ``default`` (TypeError when ``allow_none`` is False). Refused with TypeError:
    bools and anything that is not a real number (a string, a timedelta); with ValueError:
    NaN, negative numbers, zero unless ``allow_zero``, and infinities, unless
    ``infinite_is_none`` (a wait with no limit: ``inf`` then means None, as in
    ``queue.get(timeout=None)``). Returns a float.

    >>> seconds("timeout", 2)
    2.0
    >>> seconds("timeout", float("inf"), infinite_is_none=True) is None
    True
    """
    if value is None:
        if allow_none:
            return default
        raise TypeError(f"{name} must be a number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds{' or None' if allow_none else ''}"
                        f", not {type(value).__name__} {value!r}")
    number = float(value)
    if math.isnan(number):
        raise ValueError(f"{name} must be a number of seconds, not NaN")
    if math.isinf(number):
        if number > 0 and infinite_is_none:
            return None
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}"
                         + (" (None means no limit)" if allow_none else ""))
    if number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number of seconds {bound}, not {value!r}")
    return number


def as_args(args: Any, task_id: int) -> tuple[Any, ...]:
    if args is None:
        return ()
    if isinstance(args, (str, bytes)) or not isinstance(args, (tuple, list)):
        raise TypeError(f"task {task_id}: args must be a tuple or list of extra positional "
                        f"arguments, not {type(args).__name__} (for one argument: args=(x,))")
    return tuple(args)


def as_kwargs(kwargs: Any, task_id: int) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"task {task_id}: kwargs must be a dict, not {type(kwargs).__name__}")
    return dict(kwargs)


def parse_remote(worker_remote: Any) -> list[Any]:
    if not worker_remote:
        return []
    from .backends import remote
    return remote.parse_worker_remote(worker_remote)


def start_method(method: str | None) -> str:
    """The default is forkserver where it exists (Python 3.14's default on Linux): workers
    start in a clean single-threaded process, never forked from our own threads, and their
    main-thread malloc arena lets the shared-memory transport reuse memory (see _shm.py)."""
    allowed = multiprocessing.get_all_start_methods()
    if method is None:
        return "forkserver" if "forkserver" in allowed else multiprocessing.get_start_method()
    if method not in allowed:
        raise ValueError(f"start_method must be one of {allowed}, not {method!r}")
    return method


def dump_function(spec: TaskSpec) -> bytes:
    import dill
    try:
        payload: bytes = dill.dumps((spec.func, spec.args, spec.kwargs), recurse=True)
    except Exception as exc:
        raise TypeError(
            f"task {spec.task_id}: the function {describe(spec.func)} (with its args and "
            f"kwargs) cannot be pickled to send it to worker processes: {type(exc).__name__}: "
            f"{exc}. Remove references to unpicklable objects (locks, files, sockets, "
            f"generators) from its globals, closure and arguments, or use worker_type='thread'"
        ) from exc
    return payload


PRELOAD = ["imap.backends.process", "dill"]   # dill: workers load functions with it


def preload(*modules: str) -> None:
    """Have the fork server import ``modules`` before it forks worker processes, so that
    each worker finds them imported instead of importing them at its first batch (a
    library whose objects travel to workers, e.g. papy, calls this when imported).

    The fork server is started once per Python process, by the first process pool with
    ``start_method='forkserver'`` (the default): modules named after that are imported by
    each worker when it needs them, as without this call. A module that fails to import in
    the fork server is skipped there (multiprocessing ignores its ImportError).
    """
    for module in modules:
        if not isinstance(module, str) or not module:
            raise TypeError(f"preload takes module names (str), not {module!r}")
        if module not in PRELOAD:
            PRELOAD.append(module)


_override_lock = threading.Lock()
_override: dict[str, Any] | None = None


@contextlib.contextmanager
def override_workers(worker_type: str, worker_remote: Any = None,
                     worker_num: int | None = None) -> Iterator[None]:
    """Within the ``with`` block, every IMap made in this process gets these worker
    settings instead of the ones it is given (its other settings are kept).

    ``papy run --dask ADDRESS`` uses it to put a pipeline module's IMaps on a Dask cluster
    without editing the module. Not nestable.

    Example::

        with override_workers("dask", "tcp://scheduler:8786"):
            plumber = module.pipeline()     # its IMaps run on the Dask cluster
    """
    global _override
    with _override_lock:
        if _override is not None:
            raise RuntimeError("override_workers() is already in force")
        _override = {"worker_type": worker_type, "worker_remote": worker_remote,
                     "worker_num": worker_num}
    try:
        yield
    finally:
        with _override_lock:
            _override = None


def workers(worker_type: str, worker_num: Any, worker_remote: Any) -> tuple[str, Any, Any]:
    """The worker settings an IMap uses: its own, or those of ``override_workers``."""
    override = _override
    if override is None:
        return worker_type, worker_num, worker_remote
    return override["worker_type"], override["worker_num"], override["worker_remote"]
