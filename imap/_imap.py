"""IMap: a lazy, buffered, multi-task parallel map.

Data flow:

    task inputs (BatchSource | IterableSource | another task's results)
        --> Feeder thread (_feeder.py, never waits for an input)
        --Batch--> Pool (_pool.py, dispatch queue) --> slot threads
        --> workers (threads | processes | remote connections | Dask futures)
        --> slot threads --IMap._deliver--> Task.arrived (per task, under Task.cond)
        --> next() / iteration / take_ready(), in the consumer's thread (_task_cursor.py)

Threads and what each owns:
    feeder     the weave and the buffer accounting (one Feeder per run, see _feeder.py)
    readers    one per input that may wait (imap._sources.IterableSource): next() on it
    slots      one per worker (see _pool.py); deliver finished batches to their Task
    consumer   whoever calls next()/take_ready(); gives a buffer slot back per result taken

Life cycle and shutdown order: imap._running (start, stop, deliveries: a mixin of IMap).
Tasks: add_task() in any state but STOPPING; handle.remove() in any state.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence, Sized
from typing import Any, TypeVar, cast, overload

from . import _config
from ._feeder import Feeder
from ._inline import inline_workers
from ._inputs import make_source, upstream_of
from ._pool import Pool, make_handles
from ._queue import TaskQueue
from ._results import R, ResultReading, TaskIterator
from ._running import RunLifecycle, _State
from ._task import Task
from .backends import _forkserver, _shm
from .backends import process as _process  # noqa: F401 - imported with imap, not in a start
from .backends.base import TaskSpec, WorkerHandle
from .protocols import BatchSource

log = logging.getLogger(__name__)

#: default stride per worker: long enough for batches that amortise IPC (see docs/imap.md)
STRIDE_PER_WORKER = 8192
_names = itertools.count()
#: the result type of a task added with add_task
T = TypeVar("T")


class IMap(RunLifecycle, ResultReading[R]):
    """A lazy parallel map over several (function, iterable) tasks at once.

    ``IMap(f, xs)`` is like ``map(f, xs)`` evaluated by a pool of worker processes: it
    starts at once, and iterating it yields ``f(x)`` for each ``x`` in order. Several tasks
    can share one pool: add them with :meth:`add_task` (before :meth:`start`); each returns
    its own result iterator, and a task's iterable may be the result iterator of an earlier
    task (a chain) or a ``zip`` of several (a join).

    Example::

        with IMap(worker_type='thread', worker_num=4) as pool:
            squares = pool.add_task(lambda x: x * x, range(10))
            halves = pool.add_task(lambda x: x / 2, squares)      # chained
            pool.start()
            print(list(halves))

    Parameters (all validated here; see docs/imap.md):
      worker_type   'process' (default), 'thread', 'inline' (no workers: each result is
                    evaluated by the thread that reads it, in order; for tests, pdb and the
                    smallest machines; see imap._inline), or 'dask' (a Dask distributed
                    cluster; needs pip install 'papy[dask]'; see docs/remote.md)
      worker_num    local workers (default: the number of CPUs); 0 for a remote-only pool;
                    dask: the Dask threads to keep busy (default: the cluster's threads);
                    inline: accepted and ignored (the reader's thread is the one worker)
      worker_remote [('host[:port]', n), ...] RPyC classic servers and workers per host;
                    dask: a distributed.Client, a Dask Cluster, a scheduler address
                    ('tcp://host:8786'), or None for a LocalCluster of worker_num processes
                    made at start() and closed at stop() (what the caller gives is never
                    closed, and the IMap's own Client is never Dask's default client)
      stride        consecutive items of one task before moving to the next task
                    (default 8192 x workers: batches long enough to amortise IPC;
                    dask: 32768 x threads, as a Dask task costs milliseconds)
      buffer        at most this many items read and not yet taken (default 2 x tasks x stride,
                    and at most about 256 MiB of items once their size is measured)
      ordered       results in input order (True) or completion order (False)
      skip          after next(timeout=...) times out, drop that position (True) or keep it
      name          used in thread names, logs and saved pipelines (default 'imap_<n>')
      start_method  'fork', 'forkserver' or 'spawn' for process workers (default:
                    forkserver where available, else the platform's default)
      remote_tls    dict(keyfile=, certfile=, cafile=) for mutual TLS with remote servers
      remote_timeout seconds without a reply or heartbeat after which a remote worker counts
                    as lost (default 30; long items are fine: servers send heartbeats)
      shm_threshold process workers: bytes, bytearray, memoryview and numpy buffers of at
                    least this many bytes travel through POSIX shared memory instead of the
                    pipe (default 1 MiB; 0 turns it off)

    Types: ``IMap(f, xs)`` is an ``IMap[R]`` when ``f`` returns ``R`` (iterating it, and
    ``next()`` of task 0, give ``R``); ``IMap()`` without a task is an ``IMap[Any]``; each
    handle from add_task carries its own task's type (``TaskIterator[R]``).
    """

    @overload
    def __init__(self: IMap[Any], func: None = None, iterable: None = None,
                 args: tuple[Any, ...] | list[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, worker_type: str = "process",
                 worker_num: int | None = None, worker_remote: object = None,
                 stride: int | None = None, buffer: int | None = None, ordered: bool = True,
                 skip: bool = False, name: str | None = None, start_method: str | None = None,
                 remote_tls: dict[str, str] | None = None,
                 remote_timeout: float | None = None, shm_threshold: int | None = None
                 ) -> None: ...

    @overload
    def __init__(self, func: Callable[..., R], iterable: Iterable[Any] | BatchSource[Any],
                 args: tuple[Any, ...] | list[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, worker_type: str = "process",
                 worker_num: int | None = None, worker_remote: object = None,
                 stride: int | None = None, buffer: int | None = None, ordered: bool = True,
                 skip: bool = False, name: str | None = None, start_method: str | None = None,
                 remote_tls: dict[str, str] | None = None,
                 remote_timeout: float | None = None, shm_threshold: int | None = None
                 ) -> None: ...

    def __init__(self, func: Callable[..., R] | None = None,
                 iterable: Iterable[Any] | BatchSource[Any] | None = None,
                 args: tuple[Any, ...] | list[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, worker_type: str = "process",
                 worker_num: int | None = None, worker_remote: object = None,
                 stride: int | None = None, buffer: int | None = None, ordered: bool = True,
                 skip: bool = False, name: str | None = None, start_method: str | None = None,
                 remote_tls: dict[str, str] | None = None,
                 remote_timeout: float | None = None, shm_threshold: int | None = None
                 ) -> None:
        if (func is None) != (iterable is None):
            raise ValueError("IMap(func, iterable): give both (to start task 0 at once) or "
                             "neither (then add_task() and start())")
        if (iterable is not None and hasattr(iterable, "__len__")
                and len(cast(Sized, iterable)) == 0):
            raise ValueError("IMap(func, iterable): the iterable is empty (as in the original "
                             "PaPy an empty sequence is refused here; pass iter([]) to get an "
                             "IMap that ends at once)")
        worker_type, worker_num, worker_remote = _config.workers(worker_type, worker_num,
                                                                 worker_remote)
        if worker_type not in ("process", "thread", "inline", "dask"):
            raise ValueError(f"worker_type must be 'process', 'thread', 'inline' or 'dask', "
                             f"not {worker_type!r}")
        self.worker_type = worker_type
        stride_per_worker = STRIDE_PER_WORKER
        if worker_type == "dask":   # imports distributed (ImportError naming papy[dask])
            from .backends.dask import STRIDE_PER_THREAD, dask_workers
            self.worker_remote, self.worker_num = dask_workers(worker_remote, worker_num)
            self._worker_total, stride_per_worker = self.worker_num, STRIDE_PER_THREAD
        else:
            self.worker_num = _config.count("worker_num", worker_num, os.cpu_count() or 1,
                                            minimum=0)
            self.worker_remote = _config.parse_remote(worker_remote)
            if worker_type == "inline":   # the reader's thread is the one worker (_inline.py)
                self.worker_num = inline_workers(self.worker_remote)
            self._worker_total = self.worker_num + sum(n for _, _, n in self.worker_remote)
        if self._worker_total == 0:
            raise ValueError("the pool has no workers: worker_num=0 needs worker_remote=[('host', "
                             "n), ...]; or give worker_num >= 1")
        self.buffer: int | None = _config.count("buffer", buffer, None, minimum=1)
        default_stride = stride_per_worker * self._worker_total
        if self.buffer is not None:
            default_stride = min(default_stride, self.buffer)
        self.stride: int = _config.count("stride", stride, default_stride, minimum=1)
        if self.buffer is not None and self.buffer < self.stride:
            raise ValueError(f"buffer ({self.buffer}) must be >= stride ({self.stride}): the "
                             f"feeder puts stride items of a task in flight at a time")
        self.ordered = bool(ordered)
        self.skip = bool(skip)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, not {type(name).__name__}")
        self.name = name or f"imap_{next(_names)}"
        self.start_method = _config.start_method(start_method)
        if self.worker_type == "process" and self.worker_num and self.start_method == "forkserver":
            _forkserver.prepare()     # now, while the program may still have one thread
        self.shm_threshold = _config.count("shm_threshold", shm_threshold,
                                           _shm.DEFAULT_THRESHOLD, 0)
        self.remote_tls = remote_tls
        self.remote_timeout = _config.seconds("remote_timeout", remote_timeout,
                                              allow_zero=False)
        self._tasks: list[Task] = []              # in the order they were added
        self._by_id: dict[int, Task] = {}
        self._by_key: dict[int, Task] = {}        # spec.key -> task, for deliveries
        self._next_id = 0
        self._next0: Callable[[], R] = self._not_started     # next(imap): task 0
        self._iterators: dict[int, tuple[object, Any]] = {}   # shared inputs (_inputs.py)
        self._tasks_tracked: dict[int, dict[int, Any]] = {}
        # reentrant: a finalizer (a task queue or an executor collected) may remove a task
        # in a thread that holds it
        self._lock = threading.RLock()
        self._state = _State.IDLE
        self._stopped = threading.Event()
        self._stopped.set()
        self._not_starting = threading.Event()   # stop() from another thread waits on it
        self._not_starting.set()
        self._starter: int | None = None
        self._pool: Pool | None = None
        self._feeder: Feeder | None = None
        if func is not None and iterable is not None:    # both or neither (checked above)
            self.add_task(func, iterable, args, kwargs)
            self.start()

    # -- tasks -------------------------------------------------------------------------------

    def add_task(self, func: Callable[..., T], iterable: Iterable[Any] | BatchSource[Any],
                 args: tuple[Any, ...] | list[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, timeout: float | None = None,
                 block: bool = True, track: bool = False, item_timeout: float | None = None,
                 *, ordered: bool | None = None, batch_size: int | None = None
                 ) -> TaskIterator[T]:
        """Add a task: ``func(item, *args, **kwargs)`` for each item of ``iterable``.

        Returns the task's handle and result iterator (a TaskIterator). Allowed before
        start() and while the IMap runs. ``iterable`` is any iterable, a BatchSource
        (imap.protocols), or another task's results (a chain; add producers first).
        ``timeout``/``block`` are the defaults of the returned iterator's ``next``;
        ``track=True`` keeps ``{index: result}`` in ``self._tasks_tracked[task]``.
        ``item_timeout`` (seconds) bounds each evaluation: an item running longer fails
        with TimeoutError in its place, and its worker is killed and replaced (process,
        remote) or the item abandoned (thread). ``ordered`` overrides the IMap's setting
        for this task; ``batch_size`` fixes the number of items per batch (default: it
        adapts to the time and size of the items).
        """
        if not callable(func):
            raise TypeError(f"func must be callable, not {type(func).__name__}")
        _config.count("batch_size", batch_size, None, minimum=1)
        upstream = upstream_of(iterable)
        with self._lock:
            if self._state is _State.STOPPING:
                raise RuntimeError(f"{self.name} is stopping; add tasks once stop() returned")
            task_id = self._next_id
            args = _config.as_args(args, task_id)
            kwargs = _config.as_kwargs(kwargs, task_id)
            timeout = _config.seconds(f"task {task_id}: timeout", timeout,
                                      infinite_is_none=True)
            item_timeout = _config.seconds(f"task {task_id}: item_timeout", item_timeout,
                                           allow_zero=False, infinite_is_none=True)
            source, own = ((None, False) if upstream is not None else
                           make_source(iterable, task_id, self.name, self.stride,
                                       self._iterators, self.worker_type == "inline"))
            spec = TaskSpec(task_id, func, args, kwargs, item_timeout=item_timeout)
            if (self.worker_type == "process" and self.worker_num or self.worker_type == "dask"
                    or self.worker_remote):
                spec.payload = _config.dump_function(spec)
            task = Task(task_id, spec, source=source, upstream=upstream, own_source=own,
                        ordered=self.ordered if ordered is None else bool(ordered),
                        skip=self.skip, timeout=timeout, block=block, track=track,
                        batch_size=batch_size)
            self._next_id += 1
            self._tasks.append(task)
            self._by_id[task_id] = task
            if task.tracked_results is not None:
                self._tasks_tracked[task_id] = task.tracked_results
            if self._state is _State.STARTED:
                self._attach(task)
        handle: TaskIterator[T] = TaskIterator(self, task_id, timeout, block, task)
        if task_id == 0:   # next(imap); task 0 gives the IMap's results (R) by construction
            self._next0 = cast(Callable[[], R], TaskIterator(self, 0, None, True, task)._next)
        return handle

    __call__ = add_task

    def queue(self, func: Callable[..., Any] | None = None, *, size: int | None = None,
              ordered: bool = False) -> TaskQueue:
        """A task queue on this pool (papyros's dispatcher API): ``push`` items (or calls,
        with ``func=None``) as they come, ``pop``/``pop_many`` results. Usable before or
        after start() and while other tasks run; see imap.TaskQueue and docs/queues.md."""
        return TaskQueue(self, func, size=size, ordered=ordered)

    def pop_task(self, number: int | bool) -> None:
        """Remove the last ``number`` tasks (``True``: all of them). Only before start()."""
        with self._lock:
            if self._state is not _State.IDLE:
                raise RuntimeError(f"{self.name}: pop_task() is only allowed before start(); "
                                   f"remove a running task with its handle's remove()")
            removed = (len(self._tasks) if number is True
                       else _config.count("number", number, 0, 0))
            for task in self._tasks[len(self._tasks) - removed:]:
                self._forget(task)
                task.remove()            # a task that reads it sees its end

    def get_task(self, task: int = 0, timeout: float | None = None,
                 block: bool = True) -> TaskIterator[Any]:
        """Another handle and result iterator of task ``task`` (sharing its position)."""
        return TaskIterator(self, task, timeout, block, self._record(task))

    def _record(self, task: int) -> Task:
        record = self._by_id.get(task) if isinstance(task, int) else None
        if record is None:
            raise ValueError(f"{self.name}: no task {task!r} (tasks: {sorted(self._by_id)})")
        return record

    def _forget(self, task: Task) -> None:
        """Take ``task`` out of the IMap's tables (under self._lock)."""
        if self._by_id.get(task.id) is task:
            del self._by_id[task.id]
            self._tasks.remove(task)
            self._tasks_tracked.pop(task.id, None)
            self._by_key.pop(task.spec.key, None)

    def _remove(self, task: Task) -> None:
        """TaskIterator.remove(): see there."""
        with self._lock:
            if self._by_id.get(task.id) is not task:
                return                       # removed already, or stopped since
            self._forget(task)
            feeder = self._feeder
        task.remove()                    # readers, and tasks that read it, see its end
        if feeder is not None:
            feeder.remove(task)          # it closes the task's reader, if it was its own

    def _handles(self) -> Sequence[WorkerHandle]:
        return make_handles(self)

    def _attach(self, task: Task) -> None:
        """Make ``task`` part of the run (under self._lock, with a feeder)."""
        feeder = self._feeder
        assert feeder is not None
        task.release_wake = feeder.wake
        task.spec.owner = feeder
        self._by_key[task.spec.key] = task
        feeder.add(task)

    def __repr__(self) -> str:
        return (f"IMap(name={self.name!r}, worker_type={self.worker_type!r}, "
                f"workers={self._worker_total}, stride={self.stride}, {self._state.value})")
