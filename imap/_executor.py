"""``imap.Executor``: a ``concurrent.futures.Executor`` on an IMap pool.

    submit() --(future, call)--> _SubmitSource --feeder takes: future RUNNING (or skipped
        when it was cancelled)--> the submit task (unordered) --> workers
    map() --items--> a task of its own (ordered; fed from a list, or pushed one per result
        taken when ``buffersize`` is given)
    tasks' wakes --> _Runner.poke --> collector thread: the submit task's results set their
        futures; a map task's results move to its iterator's ready list

Threads: the callers; the IMap's threads; one collector thread per Executor, which also
runs the futures' callbacks (as the stdlib's executors run them in their own threads).

Shutdown order (shutdown(), the executor collected, or the interpreter exiting):
 1. ``closing`` is set under the runner's lock: submit() and map() refuse new work; the
    submit source is closed (cancel_futures: its futures not taken yet are cancelled), and
    so are the sources of the maps that push as they go
 2. the collector goes on until every future is done and every map task has given all
    its results to its iterator, then removes its tasks from the pool, and stops the pool
    if the Executor made it
 3. shutdown(wait=True) joins the collector; map iterators still hand out what they got
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._calls import PushSource, run_call
from ._mapping import MapRun, make_stream

if TYPE_CHECKING:
    from ._imap import IMap
    from ._task_cursor import Run

__all__ = ["Executor"]

log = logging.getLogger(__name__)
#: the buffer of an Executor's own pool, in strides (an IMap's default is 2 per task, fixed
#: when it starts; an Executor adds a task per map() while it runs)
BUFFER_STRIDES = 8
_runners: weakref.WeakSet[_Runner] = weakref.WeakSet()
_exiting = False


class _Future(cf.Future[Any]):
    """A standard Future whose result() also raises an exception that is false as a
    bool (CPython gh-132063: Python 3.11's Future.result() returned None for it)."""

    def result(self, timeout: float | None = None) -> Any:
        value = super().result(timeout)
        error: BaseException | None = self._exception
        if error is not None:
            raise error
        return value


class _SubmitSource(PushSource):
    """The submit task's input: (future, call) pairs. The feeder's take() marks a future
    RUNNING (it is committed to a worker now) or skips it if it was cancelled, and records
    which future each task index belongs to."""

    def __init__(self) -> None:
        super().__init__()
        self.futures: dict[int, cf.Future[Any]] = {}
        self._index = 0

    def take(self, count: int) -> list[Any] | None:
        while True:
            entries = super().take(count)
            if not entries:
                return entries
            calls = []
            for future, call in entries:
                if future.set_running_or_notify_cancel():
                    self.futures[self._index] = future
                    self._index += 1
                    calls.append(call)
            if calls:
                return calls


class _Runner:
    """What an Executor runs on; the collector thread and map iterators reference it, the
    Executor is not referenced (so that dropping it shuts it down)."""

    def __init__(self, imap: IMap[Any], owned: bool) -> None:
        self.imap = imap
        self.owned = owned
        # reentrant: a finalizer (an Executor collected) may run in a thread that holds it
        self.cond = threading.Condition(threading.RLock())
        self.poked = False
        self.closing = False
        self.source = _SubmitSource()
        self.maps: set[MapRun] = set()
        self.handle = imap.add_task(run_call, self.source, ordered=False)
        self.handle.notify(self.poke)
        self.thread = threading.Thread(target=self._collect, daemon=True,
                                       name=f"{imap.name}-executor")
        self.thread.start()
        _runners.add(self)

    def poke(self) -> None:
        with self.cond:
            self.poked = True
            self.cond.notify()

    def submit(self, call: tuple[Any, ...]) -> cf.Future[Any]:
        future: cf.Future[Any] = _Future()
        with self.cond:
            self._check_open()
            self.source.push((future, call))
        return future

    def _check_open(self) -> None:
        if self.closing:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def add_map(self, func: Callable[..., Any], items: Any, chunksize: int,
                buffersize: int | None) -> MapRun:
        with self.cond:
            self._check_open()
            source = PushSource() if buffersize is not None else None
            handle = self.imap.add_task(func, items if source is None else source,
                                        ordered=True,
                                        batch_size=chunksize if chunksize > 1 else None)
            run = MapRun(handle, source, self.poke)
            self.maps.add(run)
        handle.notify(run.wake)
        if source is not None:
            source.push_many(items)
            if len(items) < buffersize:  # type: ignore[operator]  # a source only with one
                source.close()             # the input ended already
        return run

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self.cond:
            self.closing = True
            self.poked = True
            self.cond.notify()
        self.source.close()
        for run in list(self.maps):
            run.collecting = True      # every call completes: the collector takes results
            if run.source is not None:
                run.source.close()
        if cancel_futures:
            for future, _ in self.source.drain():
                future.cancel()
        if wait and threading.current_thread() is not self.thread:
            self.thread.join()

    # -- the collector thread ---------------------------------------------------------

    def _collect(self) -> None:
        try:
            while self._collect_once():
                with self.cond:
                    while not self.poked:
                        self.cond.wait()
                    self.poked = False
        except BaseException as exc:  # every waiter gets it, never lost
            log.exception("%s: the executor's collector failed", self.imap.name)
            self._fail_everything(exc)
        finally:
            self._finish()

    def _collect_once(self) -> bool:
        """Settle what arrived; False when there is nothing left to wait for."""
        record = self.handle._record
        if record.closed is not None:
            self._fail_everything(RuntimeError(f"the IMap {self.imap.name} was stopped "
                                               f"under the executor ({record.closed})"))
            return False
        while True:                    # until none is ready, or the end (seen at once)
            runs = record.take_runs(None)
            if not runs:
                break
            record.wake_feeder_if_due()
            self._settle(runs)
        for run in list(self.maps):
            self._move(run)
        with self.cond:
            return not (self.closing and runs is None and not self.source.futures
                        and all(run.done for run in self.maps))

    def _settle(self, runs: list[Run]) -> None:
        futures = self.source.futures
        for start, values, errors in runs:
            for position, value in enumerate(values):
                future = futures.pop(start + position)
                error = None if errors is None else errors.get(position)
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(value)

    def _move(self, run: MapRun) -> None:
        """Once shutting down, a map task's results go to its stream (so that every call
        completes, as the stdlib's map does); before, its reader takes them itself."""
        with run.cond:
            if run.abandoned and not run.done:
                run.close()
            elif self.closing:
                run.fetch()
        if run.done:
            self.maps.discard(run)

    def _fail_everything(self, error: BaseException) -> None:
        futures = list(self.source.futures.values()) + [f for f, _ in self.source.drain()]
        self.source.futures.clear()
        for future in futures:
            if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
                future.set_exception(error)
        for run in list(self.maps):
            with run.cond:
                run.error, run.done = error, True
                run.cond.notify_all()

    def _finish(self) -> None:
        with self.cond:
            self.closing = True
        for run in list(self.maps):
            run.handle.remove()
        self.handle.remove()
        if self.owned:
            self.imap.stop()


class Executor(cf.Executor):
    """A ``concurrent.futures.Executor`` on an IMap pool: local processes (the default) or
    threads, remote hosts, or an IMap you own.

    ``Executor(max_workers=None, *, worker_type='process', worker_num=None,
    worker_remote=None, pool=None, **options)``: ``max_workers`` is the stdlib's name for
    ``worker_num``; ``options`` go to IMap (``stride``, ``buffer``, ``remote_tls``, ...).
    ``pool=imap`` runs on an IMap you own instead: started if it is not, left running by
    shutdown(). ``submit`` returns standard Futures (``wait``, ``as_completed``, callbacks
    and ``cancel`` of a call not yet started work); a worker that dies costs only its own
    future (``imap.WorkerDiedError``). See docs/queues.md.

    Example::

        with Executor(max_workers=2) as executor:
            future = executor.submit(pow, 2, 10)
            print(future.result(), list(executor.map(abs, [-1, -2])))
    """

    def __init__(self, max_workers: int | None = None, *, worker_type: str = "process",
                 worker_num: int | None = None, worker_remote: Any = None,
                 pool: IMap[Any] | None = None, **options: Any) -> None:
        from ._imap import IMap
        if max_workers is not None:
            if worker_num is not None:
                raise TypeError("give max_workers or worker_num, not both")
            if isinstance(max_workers, bool) or not isinstance(max_workers, int):
                raise TypeError(f"max_workers must be an int, not {max_workers!r}")
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
            worker_num = max_workers
        if pool is not None:
            if worker_num is not None or worker_remote is not None or options:
                raise TypeError("Executor(pool=imap) takes no pool settings: the IMap has "
                                "them")
            imap, owned = pool, False
        else:
            imap = IMap(worker_type=worker_type, worker_num=worker_num,
                        worker_remote=worker_remote, **options)
            if "buffer" not in options:
                # tasks come and go (submit, each map): room for several strides in flight
                imap.buffer = BUFFER_STRIDES * imap.stride
            owned = True
        runner = _Runner(imap, owned)
        try:
            if not imap.started:
                imap.start()
        except BaseException:
            runner.handle.remove()           # the collector sees the end at once
            runner.shutdown(wait=True, cancel_futures=True)
            raise
        self._runner = runner
        self._finalizer = weakref.finalize(self, runner.shutdown, False, False)

    @property
    def pool(self) -> IMap[Any]:
        """The IMap the calls run on."""
        return self._runner.imap

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> cf.Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; a Future of its result."""
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, not {type(fn).__name__}")
        return self._runner.submit((fn, args, kwargs))

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1,
            buffersize: int | None = None) -> Iterator[Any]:
        """Like ``map(fn, *iterables)``, evaluated on the pool, in order (Python 3.14's
        semantics). Without ``buffersize`` every call is scheduled now; with it at most
        ``buffersize`` calls are ahead of the consumer (the iterables are read as results
        are taken). ``timeout``: seconds from this call after which ``next()`` raises
        TimeoutError (and the calls left are cancelled). An exception of a call is raised
        by ``next()`` at its position, and the iteration goes on. ``chunksize`` > 1 fixes
        the number of calls per batch (default: it adapts). The iterator has ``close()``."""
        if buffersize is not None and (isinstance(buffersize, bool)
                                       or not isinstance(buffersize, int)):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise TypeError(f"chunksize must be an int, not {chunksize!r}")
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else time.monotonic() + timeout
        if len(iterables) == 1:
            func, rows = fn, iter(iterables[0])
        else:
            func, rows = _star(fn), zip(*iterables, strict=False)   # map(): the shortest
        self._runner._check_open()
        items = list(rows if buffersize is None else itertools.islice(rows, buffersize))
        run = self._runner.add_map(func, items, chunksize, buffersize)
        rest = rows if buffersize is not None and len(items) == buffersize else None
        return make_stream(run, rest, end_time)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls (RuntimeError); ``cancel_futures``: cancel the calls not started
        yet; ``wait``: return once every call is done and the pool (if the Executor made
        it) is stopped. A pool given as ``pool=`` is left running. Idempotent."""
        self._runner.shutdown(wait, cancel_futures)

    def __repr__(self) -> str:
        return f"<imap.Executor on {self._runner.imap!r}>"


def _star(fn: Callable[..., Any]) -> Callable[[tuple[Any, ...]], Any]:
    # made in a function so that dill ships it by value (see imap._calls)
    def call_with(args: tuple[Any, ...]) -> Any:
        return fn(*args)
    return call_with


def _python_exit() -> None:
    """At interpreter exit (before threads are joined): no new calls anywhere; wait for
    the calls scheduled (as the stdlib's executors do)."""
    global _exiting
    _exiting = True
    for runner in list(_runners):
        try:
            runner.shutdown(wait=True, cancel_futures=False)
        except Exception:  # exit goes on
            log.debug("error shutting an executor down at exit", exc_info=True)


threading._register_atexit(_python_exit)  # type: ignore[attr-defined]  # private, no stub
