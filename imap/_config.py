"""Validation of IMap's settings and tasks (clear errors at construction time), and the
modules the fork server preloads (``preload``)."""
from __future__ import annotations

import multiprocessing

from .backends.base import TaskSpec, describe


def count(what: str, value, default, minimum: int):
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int >= {minimum} or None, not {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, not {value}")
    return value


def as_args(args, task_id: int) -> tuple:
    if args is None:
        return ()
    if isinstance(args, (str, bytes)) or not isinstance(args, (tuple, list)):
        raise TypeError(f"task {task_id}: args must be a tuple or list of extra positional "
                        f"arguments, not {type(args).__name__} (for one argument: args=(x,))")
    return tuple(args)


def as_kwargs(kwargs, task_id: int) -> dict:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"task {task_id}: kwargs must be a dict, not {type(kwargs).__name__}")
    return dict(kwargs)


def parse_remote(worker_remote) -> list:
    if not worker_remote:
        return []
    from .backends import remote
    return remote.parse_worker_remote(worker_remote)


def start_method(method: "str | None") -> str:
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
        return dill.dumps((spec.func, spec.args, spec.kwargs), recurse=True)
    except Exception as exc:
        raise TypeError(
            f"task {spec.task_id}: the function {describe(spec.func)} (with its args and "
            f"kwargs) cannot be pickled to send it to worker processes: {type(exc).__name__}: "
            f"{exc}. Remove references to unpicklable objects (locks, files, sockets, "
            f"generators) from its globals, closure and arguments, or use worker_type='thread'"
        ) from exc


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
