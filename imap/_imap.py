"""IMap: a lazy, buffered, multi-task parallel map.

Data flow:

    task iterables --> Feeder thread (_feeder.py) --Batch--> Pool (_pool.py, dispatch queue)
        --> slot threads --> workers (threads | processes | remote connections | Dask futures)
        --> slot threads --IMap._deliver--> Task.arrived (per task, under Task.cond)
        --> next() / iteration, in the consumer's thread (_task.py)

Threads and what each owns:
    feeder     the weave and the buffer accounting (one Feeder per run, see _feeder.py)
    slots      one per worker (see _pool.py); deliver finished batches to their Task
    consumer   whoever calls next(); gives a buffer slot back for every result it takes

Life cycle (self._state, changed only under self._lock):
    IDLE --start()--> STARTING --> STARTED --stop()--> STOPPING --> IDLE (tasks removed)

Shutdown order in stop():
 1. state STOPPING; every task is closed (blocked readers get RuntimeError), feeder told
 2. the pool stops: queued batches dropped, workers finish (or are killed if forced), joined
 3. the feeder is joined (one stuck inside a user's iterator is abandoned after a grace)
 4. tasks removed, state IDLE
"""
from __future__ import annotations

import atexit
import enum
import itertools
import logging
import math
import multiprocessing
import os
import threading
import weakref

from . import _config
from ._feeder import Feeder
from ._inputs import _is_chained, _is_steady
from ._pool import Pool
from ._results import TaskIterator, _ResultStream
from ._task import Task
from .backends import _shm
from .backends.base import Batch, TaskSpec

log = logging.getLogger("imap")
log.addHandler(logging.NullHandler())

#: default stride per worker: long enough for batches that amortise IPC (see docs/imap.md)
STRIDE_PER_WORKER = 2048
#: seconds stop() waits for a feeder that is blocked inside a user's iterator
FEEDER_GRACE = 2.0
_names = itertools.count()
_live: "weakref.WeakSet[IMap]" = weakref.WeakSet()


class _State(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"


class IMap:
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
      worker_type   'process' (default), 'thread', or 'dask' (a Dask distributed cluster;
                    needs pip install 'papy[dask]'; see docs/remote.md)
      worker_num    local workers (default: the number of CPUs); 0 for a remote-only pool;
                    dask: the Dask threads to keep busy (default: the cluster's threads)
      worker_remote [('host[:port]', n), ...] RPyC classic servers and workers per host;
                    dask: a distributed.Client, a Dask Cluster, a scheduler address
                    ('tcp://host:8786'), or None for a LocalCluster of worker_num processes
                    made at start() and closed at stop() (what the caller gives is never
                    closed, and the IMap's own Client is never Dask's default client)
      stride        consecutive items of one task before moving to the next task
                    (default 2048 x workers: batches long enough to amortise IPC;
                    dask: 32768 x threads, as a Dask task costs milliseconds)
      buffer        at most this many items read and not yet taken (default 2 x tasks x stride)
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
    """

    __imap_chained__ = True     # an input that reads an IMap's results (imap._inputs)

    def __init__(self, func=None, iterable=None, args=None, kwargs=None, worker_type="process",
                 worker_num=None, worker_remote=None, stride=None, buffer=None, ordered=True,
                 skip=False, name=None, start_method=None, remote_tls=None, remote_timeout=None,
                 shm_threshold=None):
        if (func is None) != (iterable is None):
            raise ValueError("IMap(func, iterable): give both (to start task 0 at once) or "
                             "neither (then add_task() and start())")
        if iterable is not None and hasattr(iterable, "__len__") and len(iterable) == 0:
            raise ValueError("IMap(func, iterable): the iterable is empty (as in the original "
                             "PaPy an empty sequence is refused here; pass iter([]) to get an "
                             "IMap that ends at once)")
        worker_type, worker_num, worker_remote = _config.workers(worker_type, worker_num,
                                                                 worker_remote)
        if worker_type not in ("process", "thread", "dask"):
            raise ValueError(f"worker_type must be 'process', 'thread' or 'dask', not "
                             f"{worker_type!r}")
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
            self._worker_total = self.worker_num + sum(n for _, _, n in self.worker_remote)
        if self._worker_total == 0:
            raise ValueError("the pool has no workers: worker_num=0 needs worker_remote=[('host', "
                             "n), ...]; or give worker_num >= 1")
        self.buffer = _config.count("buffer", buffer, None, minimum=1)
        default_stride = stride_per_worker * self._worker_total
        if self.buffer is not None:
            default_stride = min(default_stride, self.buffer)
        self.stride = _config.count("stride", stride, default_stride, minimum=1)
        if self.buffer is not None and self.buffer < self.stride:
            raise ValueError(f"buffer ({self.buffer}) must be >= stride ({self.stride}): the "
                             f"feeder puts stride items of a task in flight at a time")
        self.ordered = bool(ordered)
        self.skip = bool(skip)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, not {type(name).__name__}")
        self.name = name or f"imap_{next(_names)}"
        self.start_method = _config.start_method(start_method)
        self.shm_threshold = _config.count("shm_threshold", shm_threshold,
                                           _shm.DEFAULT_THRESHOLD, 0)
        self.remote_tls = remote_tls
        if remote_timeout is not None and (isinstance(remote_timeout, bool) or not isinstance(
                remote_timeout, (int, float)) or remote_timeout <= 0):
            raise ValueError(f"remote_timeout must be a number of seconds > 0 or None (30 s), "
                             f"not {remote_timeout!r}")
        self.remote_timeout = remote_timeout
        self._tasks: list[Task] = []
        self._tasks_tracked: dict = {}
        self._lock = threading.Lock()
        self._state = _State.IDLE
        self._stopped = threading.Event()
        self._stopped.set()
        self._pool: Pool | None = None
        self._feeder: Feeder | None = None
        if func is not None:
            self.add_task(func, iterable, args, kwargs)
            self.start()

    # -- tasks -------------------------------------------------------------------------------

    def add_task(self, func, iterable, args=None, kwargs=None, timeout=None, block=True,
                 track=False, item_timeout=None) -> "TaskIterator":
        """Add a task: ``func(item, *args, **kwargs)`` for each item of ``iterable``.

        Returns the task's result iterator. Only before :meth:`start`. Add producers before
        the tasks that consume their results. ``timeout``/``block`` are the defaults of the
        returned iterator's ``next``; ``track=True`` keeps ``{index: result}`` in
        ``self._tasks_tracked[task]``. ``item_timeout`` (seconds) bounds each evaluation:
        an item running longer fails with TimeoutError in its place, and its worker is
        killed and replaced (process, remote) or the item abandoned (thread).
        """
        with self._lock:
            if self._state is not _State.IDLE:
                raise RuntimeError(f"{self.name}: add_task() is only allowed before start(); "
                                   f"stop() the IMap first, then add tasks and start() again")
            task_id = len(self._tasks)
            if not callable(func):
                raise TypeError(f"task {task_id}: func must be callable, not "
                                f"{type(func).__name__}")
            args = _config.as_args(args, task_id)
            kwargs = _config.as_kwargs(kwargs, task_id)
            try:
                iterator = iter(iterable)
            except TypeError:
                raise TypeError(f"task {task_id}: the iterable is not iterable "
                                f"({type(iterable).__name__}); pass a list, a generator or "
                                f"another task's result iterator") from None
            for what, value in (("timeout", timeout), ("item_timeout", item_timeout)):
                if value is not None and (isinstance(value, bool)
                                          or not isinstance(value, (int, float)) or value < 0):
                    raise ValueError(f"task {task_id}: {what} must be a number of seconds >= 0 "
                                     f"or None, not {value!r}")
            spec = TaskSpec(task_id, func, args, kwargs, item_timeout=item_timeout)
            if (self.worker_type == "process" and self.worker_num or self.worker_type == "dask"
                    or self.worker_remote):
                spec.payload = _config.dump_function(spec)
            task = Task(task_id, spec, iterator, _is_chained(iterable), self.ordered, self.skip,
                        timeout, block, track, steady=_is_steady(iterator))
            self._tasks.append(task)
            if track:
                self._tasks_tracked[task_id] = task.tracked_results
        return TaskIterator(self, task_id, timeout, block, task)

    __call__ = add_task

    def pop_task(self, number) -> None:
        """Remove the last ``number`` tasks (``True``: all of them). Only before start()."""
        with self._lock:
            if self._state is not _State.IDLE:
                raise RuntimeError(f"{self.name}: pop_task() is only allowed before start()")
            removed = (len(self._tasks) if number is True
                       else _config.count("number", number, 0, 0))
            for task in self._tasks[len(self._tasks) - removed:]:
                self._tasks_tracked.pop(task.id, None)
            del self._tasks[len(self._tasks) - removed:]

    def get_task(self, task=0, timeout=None, block=True) -> "TaskIterator":
        """Another result iterator of task ``task`` (sharing its position)."""
        if not isinstance(task, int) or not 0 <= task < len(self._tasks):
            raise ValueError(f"{self.name}: no task {task!r} (tasks: 0..{len(self._tasks) - 1})")
        return TaskIterator(self, task, timeout, block)

    # -- life cycle --------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._state is _State.STARTED

    @property
    def buffer_size(self) -> int | None:
        """The buffer in force for the current run (items), None when not started."""
        feeder = self._feeder
        return feeder.buffer_size if feeder is not None else None

    @property
    def buffer_used(self) -> int | None:
        """Items read from the inputs and not yet taken by a reader (now; a snapshot that
        may be off by a batch while threads run), None when not started."""
        feeder = self._feeder
        return feeder.used() if feeder is not None else None

    def start(self, stages=None) -> None:
        """Start the workers and the feeder. Raises WorkerStartError if a worker cannot start.

        ``stages`` (default both): 1 starts the workers and makes the results readable
        (``started`` is True, a reader waits for results), 2 starts the feeder. Pipelines
        whose IMaps read each other's results start every IMap's stage 1 first, then every
        stage 2, so no feeder reads an IMap that is not started yet (as the original did).
        """
        stages = (1, 2) if stages is None else tuple(stages)
        if not set(stages) <= {1, 2}:
            raise ValueError(f"{self.name}: start stages are 1 and 2, not {stages!r}")
        if 1 in stages:
            self._start_workers()
        if 2 in stages:
            with self._lock:
                if self._state is not _State.STARTED:
                    raise RuntimeError(f"{self.name}: start stage 2 needs stage 1 first")
                feeder = self._feeder
            feeder.start()

    def _start_workers(self) -> None:
        with self._lock:
            if self._state is not _State.IDLE:
                raise RuntimeError(f"{self.name} is already started; stop() it first")
            self._state = _State.STARTING
            self._stopped.clear()
            tasks = tuple(self._tasks)
        try:
            self._running = tasks
            self._by_key = {task.spec.key: task for task in tasks}
            self._pool = Pool(self._make_handles(), self._deliver, self.name)
            self._pool.start()
            self._feeder = Feeder(self.name, tasks, self._pool, self.stride,
                                  buffer_size=self.buffer or 2 * max(1, len(tasks)) * self.stride,
                                  batch_cap=max(1, math.ceil(self.stride / self._worker_total)),
                                  workers=self._worker_total)
        except BaseException:
            with self._lock:
                self._state = _State.IDLE
                self._pool = self._feeder = None
                self._stopped.set()
            raise
        with self._lock:
            self._state = _State.STARTED   # only now may readers (other feeders) come in
        _live.add(self)

    def stop(self, ends=None, forced=False) -> None:
        """End every task, join every thread and worker, remove the tasks.

        Results not taken yet are discarded. The IMap can then take new tasks and be
        started again. ``forced=True`` kills process workers at once instead of letting them
        finish their current batch. ``ends`` is accepted for compatibility and ignored
        (every task is ended). A no-op when not started.
        """
        with self._lock:
            if self._state is _State.IDLE:
                return
            if self._state is _State.STARTING:
                raise RuntimeError(f"{self.name} is being started by another thread; stop() "
                                   f"it once start() returned")
            if self._state is _State.STOPPING:
                stopping_elsewhere = True
            else:
                stopping_elsewhere = False
                self._state = _State.STOPPING
        if stopping_elsewhere:
            self._stopped.wait()
            return
        try:
            reason = "stop() was called"
            for task in self._running:
                task.close(RuntimeError(reason))
            feeder = self._feeder
            if feeder is not None:
                feeder.stop()
            self._pool.stop(forced=forced)
            if feeder is not None and feeder.thread is not threading.current_thread():
                feeder.thread.join(FEEDER_GRACE)
                if feeder.thread.is_alive():
                    log.warning("%s: the feeder is blocked inside a task's input iterator and "
                                "is abandoned (a daemon thread); make the input end or see the "
                                "stop on its own", self.name)
        finally:
            with self._lock:
                self._tasks = []
                self._tasks_tracked = {}
                self._running = ()
                self._by_key = {}
                self._pool = None
                self._feeder = None
                self._state = _State.IDLE
                self._stopped.set()
            _live.discard(self)

    def __enter__(self) -> "IMap":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(forced=exc_type is not None)

    def __repr__(self) -> str:
        return (f"IMap(name={self.name!r}, worker_type={self.worker_type!r}, "
                f"workers={self._worker_total}, stride={self.stride}, {self._state.value})")

    # -- results -----------------------------------------------------------------------------

    def next(self, timeout=None, task=0, block=True):
        """The next result of task ``task`` (see the class docstring).

        Raises the item's exception in its place, TimeoutError when no result is ready
        within ``timeout`` seconds (``block=False``: at once), StopIteration at the end of
        the task (and on every later call), RuntimeError when the IMap is not started.
        """
        if self._state is not _State.STARTED:
            raise RuntimeError(f"{self.name} is not started: add tasks, then call start() "
                               f"(after stop() the tasks are removed)")
        try:
            current = self._running[task]
        except (IndexError, TypeError):
            raise ValueError(f"{self.name}: no task {task!r}") from None
        feeder = self._feeder
        return current.take(0 if not block else timeout, feeder.on_starving, feeder.wake,
                            feeder.feed_now if threading.get_ident() == feeder.ident else None)

    def __iter__(self):
        return self._iterate(0, None, True)

    def __next__(self):
        return self.next()

    def _iterate(self, task_id, timeout, block):
        """Iteration over a task: the items of a plain batch are handed out by its list
        iterator at C speed (``chain`` asks _batches for the next iterator only once per
        batch); the first item of each batch and batches with errors go through Task.take."""
        stream = _ResultStream.from_iterable(self._batches(task_id, timeout, block))
        stream._where = (self, task_id)
        return stream

    def _batches(self, task_id, timeout, block):
        if not block:
            timeout = 0
        while True:
            if self._state is not _State.STARTED:
                raise RuntimeError(f"{self.name} is not started: add tasks, then call start()")
            task = self._running[task_id]
            if task.plain():
                yield task.cursor[1]     # shared with next(): one position for both
            feeder = self._feeder
            feed_now = feeder.feed_now if threading.get_ident() == feeder.ident else None
            try:
                value = task.take(timeout, feeder.on_starving, feeder.wake, feed_now)
            except StopIteration:
                return
            yield (value,)

    # -- results from the pool -------------------------------------------------------------

    def _deliver(self, batch: Batch, values: list, errors, elapsed: float) -> None:
        task = self._by_key.get(batch.task.key)
        if task is None:  # a batch of a previous run, finishing after stop()
            return
        feeder = self._feeder
        feeder.delivered(batch)
        if not batch.isolated and errors is None:
            task.learn(len(values), elapsed, feeder.batch_cap, batch.nbytes)
        task.deliver(batch.start, values, errors)

    # -- workers -------------------------------------------------------------------------

    def _make_handles(self) -> list:
        if self.worker_type == "dask":
            from .backends.dask import make_dask_handles
            return make_dask_handles(self.worker_remote, self.worker_num, self.name)
        handles = []
        if self.worker_num:
            if self.worker_type == "thread":
                from .backends.thread import ThreadHandle
                handles += [ThreadHandle(i) for i in range(self.worker_num)]
            else:
                from .backends.process import ProcessHandle
                context = multiprocessing.get_context(self.start_method)
                if self.start_method == "forkserver":
                    # imported once by the fork server instead of by every worker
                    context.set_forkserver_preload(list(_config.PRELOAD))
                prefix = _shm.pool_prefix()
                handles += [ProcessHandle(i, context, self.name, self.shm_threshold, prefix)
                            for i in range(self.worker_num)]
        if self.worker_remote:
            from .backends import remote
            handles += remote.make_remote_handles(self.worker_remote, tls=self.remote_tls,
                                                  timeout=self.remote_timeout)
        return handles


@atexit.register
def _stop_live_imaps() -> None:
    """An IMap left running at interpreter exit is stopped, so exit never hangs."""
    for imap in list(_live):
        try:
            imap.stop(forced=True)
        except Exception:  # noqa: BLE001
            log.debug("error stopping %s at exit", imap, exc_info=True)
