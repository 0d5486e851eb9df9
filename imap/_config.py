"""Validation of IMap's settings and tasks (clear errors at construction time), the
modules the fork server preloads (``preload``), and ``override_workers`` (``papy run
--dask``)."""
from __future__ import annotations

import contextlib
import multiprocessing
import threading
from collections.abc import Iterator
from typing import Any

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


def start_method(method):
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
