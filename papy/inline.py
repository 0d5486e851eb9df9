"""papy.inline: job_stream's inline front end, on papy's pools.

A stream written as plain decorated functions, in source order::

    from papy.inline import Work

    with Work("Hello there world, how are you?".split(), worker_type="thread") as w:
        @w.job
        def length(word):
            return len(word)

        @w.reduce(emit=lambda store: store.total / store.count)
        def average(store, works, others):
            if not hasattr(store, "total"):
                store.total, store.count = 0, 0
            for n in works:
                store.total += n
                store.count += 1
            for other in others:
                store.total += getattr(other, "total", 0)
                store.count += getattr(other, "count", 0)

        @w.result
        def show(mean):
            print(mean)

How the decorators become a papy pipeline (``Work.run``)::

    items (+ what @init functions return)
      --> [Reducer(fold, body=[the stages of its scope])]... --> the stages after the last
          reduce --> output, read here: @result per item, or @finish(list), or run()'s list
    @job            Piper(job, parallel=pool, drop_none=True): None sends nothing, a
                    Multiple several items, an Args item is called as f(*a, **k)
    @frame .. @frame_end   Frame(start, end, body=[the stages between])
    @reduce         Reducer(fold, body=[every stage since the previous reduce]): the
                    whole stream so far is folded into one item (or one per window:
                    ``every=n`` items, ``interval=seconds``); what fold returns is recurred

Jobs, reducers and frames run on one papy pool per run (``worker_type='process'`` by
default, ``'thread'``), or ``worker_type='inline'``: no pool, every stage evaluated by the
run itself, in this process (linear Pipers; for debugging and deterministic runs);
``result``, ``finish`` and ``init`` run in the main program. Unlike job_stream, an item that
fails does not end the run: it becomes an error item in place, the other items go on, and
``w.errors`` lists the error items after the run. Definition-order mistakes and wrong
arities are ValueErrors that name the function, raised at decoration time.
"""
from __future__ import annotations

import builtins
import itertools
from typing import Any, Callable, Generator, Iterable, Literal, TypeVar

from imap import IMap

from ._errors import PapyError
from ._fanout import Args, Multiple, as_items, call_with
from ._frame import Frame
from ._inline_calls import check_arity, fold_call, frame_call, job_call, name_of
from ._piper import Piper
from ._plumber import Plumber
from ._reduce import Reducer
from ._stores import Object
from ._worker import Worker


__all__ = ["Work", "Multiple", "Args", "Object", "map"]

F = TypeVar("F", bound=Callable[..., Any])


class _Job:
    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]):
        self.func = func


class _FrameSpec:
    __slots__ = ("start", "end", "store", "emit", "body")

    def __init__(self, start: Callable[..., Any], store: Callable[[], Any],
                 emit: Callable[[Any], Any] | None):
        self.start, self.store, self.emit = start, store, emit
        self.end: Callable[..., Any] | None = None
        self.body: list[Any] = []


class _Reduce:
    __slots__ = ("fold", "store", "emit", "every", "interval", "body")

    def __init__(self, fold: Callable[..., Any], store: Callable[[], Any],
                 emit: Callable[[Any], Any] | None, every: int | None,
                 interval: float | None, body: list[Any]):
        self.fold, self.store, self.emit = fold, store, emit
        self.every, self.interval, self.body = every, interval, body


def _decorator(method: Callable[..., Any], func: Any, kwargs: dict[str, Any]) -> Any:
    """``@w.job`` and ``@w.job(...)`` (``func`` None: return the decorator)."""
    if func is None:
        return lambda inner: method(inner, **kwargs)
    return method(func, **kwargs)


class Work:
    """A job_stream stream: ``Work(items=(), worker_type='process', worker_num=None)``.

    Decorate functions in the order their stages run (``job``, ``frame`` .. ``frame_end``,
    ``reduce``, then ``result`` or ``finish``; ``init`` anywhere before those). Leaving a
    ``with Work(...) as w:`` block runs the stream (its results are discarded unless a
    ``result`` or ``finish`` handles them); ``run()`` runs it and returns the list of results
    (in any order), what ``finish`` returned, or None when ``result`` handled them. After a
    run, ``errors`` lists the error items (a PiperError for each item that failed).
    """

    def __init__(self, items: Iterable[Any] = (), worker_type: str = "process",
                 worker_num: int | None = None):
        if not isinstance(worker_type, str):
            raise TypeError(f"Work worker_type must be a string ('process', 'thread', "
                            f"'inline'), not {worker_type!r}")
        self.items = items
        self.worker_type, self.worker_num = worker_type, worker_num
        self.errors: list[PapyError] = []
        self._top: list[Any] = []       # stages (and reduces) of the stream
        self._cut = 0                   # _top[_cut:]: the scope the next reduce closes
        self._frames: list[_FrameSpec] = []     # frames opened and not ended
        self._inits: list[Callable[[], Any]] = []
        self._result: Callable[..., Any] | None = None
        self._finish: Callable[[list[Any]], Any] | None = None
        self._composites: list[Reducer | Frame] = []

    # -- the decorators --------------------------------------------------------------------
    def job(self, func: Any = None, **kwargs: Any) -> Any:
        """``f(work)`` for each item (``f(*a, **k)`` for an ``Args``); returns one item, a
        ``Multiple``, or None (nothing)."""
        return _decorator(self._job, func, kwargs)

    def _job(self, func: F) -> F:
        self._check_open("job", func)
        check_arity("job", func, 1, at_least=True)
        self._stages().append(_Job(func))
        return func

    def reduce(self, func: Any = None, **kwargs: Any) -> Any:
        """``f(store, works, others)`` folds the whole stream so far (the scope since the
        previous reduce) into ``store``; keywords ``store`` (a factory, default Object),
        ``emit`` (default: the store), ``every`` (items) / ``interval`` (seconds) for
        windows. What ``f`` returns is sent back through the scope's stages."""
        return _decorator(self._reduce, func, kwargs)

    def _reduce(self, func: F, store: Callable[[], Any] = Object,
                emit: Callable[[Any], Any] | None = None, every: int | None = None,
                interval: float | None = None) -> F:
        self._check_open("reduce", func)
        if self._frames:
            raise ValueError(f"Work.reduce: function {name_of(func)!r} is inside frame "
                             f"{name_of(self._frames[-1].start)!r}; end the frame "
                             f"(@frame_end) first: a reduce closes the stream's scope")
        check_arity("reduce", func, 3, at_least=False)
        body, self._top = self._top[self._cut:], self._top[:self._cut]
        self._top.append(_Reduce(func, store, emit, every, interval, body))
        self._cut = len(self._top)
        return func

    def frame(self, func: Any = None, **kwargs: Any) -> Any:
        """Starts a frame: ``f(store, first)`` runs for each item and again each time none
        of its work is outstanding; what it returns goes through the stages up to
        ``frame_end``; None ends the loop and ``emit(store)`` goes on (keywords ``store``,
        ``emit`` as for reduce)."""
        return _decorator(self._frame, func, kwargs)

    def _frame(self, func: F, store: Callable[[], Any] = Object,
               emit: Callable[[Any], Any] | None = None) -> F:
        self._check_open("frame", func)
        check_arity("frame", func, 2, at_least=True)
        self._frames.append(_FrameSpec(func, store, emit))
        return func

    def frame_end(self, func: Any = None) -> Any:
        """Ends the frame: ``f(store, next)`` for each item out of its stages; what it
        returns goes through them again."""
        return _decorator(self._frame_end, func, {})

    frameEnd = frame_end    # noqa: N815 - job_stream's name

    def _frame_end(self, func: F) -> F:
        self._check_open("frame_end", func)
        if not self._frames:
            raise ValueError(f"Work.frame_end: function {name_of(func)!r} ends no frame "
                             f"(decorate the frame's start with @frame first)")
        check_arity("frame_end", func, 2, at_least=True)
        spec = self._frames.pop()
        spec.end = func
        self._stages().append(spec)
        return func

    def result(self, func: Any = None) -> Any:
        """``f(item)`` in the main program for each item that leaves the stream; nothing
        may be added after it."""
        return _decorator(self._set_result, func, {})

    def _set_result(self, func: F) -> F:
        self._check_open("result", func)
        self._check_frames_closed("result", func)
        check_arity("result", func, 1, at_least=True)
        self._result = func
        return func

    def finish(self, func: Any = None) -> Any:
        """``f(results)`` once in the main program with the list of every result; run()
        returns what it returns. Nothing may be added after it."""
        return _decorator(self._set_finish, func, {})

    def _set_finish(self, func: F) -> F:
        self._check_open("finish", func)
        self._check_frames_closed("finish", func)
        check_arity("finish", func, 1, at_least=False)
        self._finish = func
        return func

    def init(self, func: Any = None) -> Any:
        """``f()`` once in the main program before the stream runs; what it returns (an
        item, a Multiple) is added to the items."""
        return _decorator(self._init, func, {})

    def _init(self, func: F) -> F:
        self._check_open("init", func)
        check_arity("init", func, 0, at_least=False)
        self._inits.append(func)
        return func

    def _stages(self) -> list[Any]:
        return self._frames[-1].body if self._frames else self._top

    def _check_open(self, kind: str, func: Any) -> None:
        for ender, handler in (("result", self._result), ("finish", self._finish)):
            if handler is not None:
                raise ValueError(f"Work.{kind}: function {name_of(func)!r} comes after "
                                 f"Work.{ender} ({name_of(handler)!r}); after a result or a "
                                 f"finish nothing may be added to the stream")

    def _check_frames_closed(self, kind: str, func: Any) -> None:
        if self._frames:
            raise ValueError(f"Work.{kind}: function {name_of(func)!r} comes before the end "
                             f"of frame {name_of(self._frames[-1].start)!r}; end it with "
                             f"@frame_end first")

    # -- running ---------------------------------------------------------------------------
    def __enter__(self) -> Work:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self._run(keep=False)

    def run(self) -> Any:
        """Run the stream: the list of its results (any order), what ``finish`` returned,
        or None when ``result`` handled them. ``errors`` lists the items that failed."""
        return self._run(keep=True)

    def _run(self, keep: bool) -> Any:
        if self._frames:
            raise ValueError(f"Work.run: frame {name_of(self._frames[-1].start)!r} is not "
                             f"ended; end it with @frame_end")
        self.errors = []
        self._composites = []
        items: Iterable[Any] = self.items
        added = [item for init in self._inits for item in as_items(init())]
        if added:
            items = itertools.chain(items, added)
        collected: list[Any] | None = [] if (keep and self._result is None) or \
            self._finish is not None else None
        outputs = self._outputs(items)
        try:
            for item in outputs:
                if isinstance(item, PapyError):
                    self.errors.append(item)
                elif self._result is not None:
                    call_with(self._result, item)
                elif collected is not None:
                    collected.append(item)
        finally:
            outputs.close()     # a result handler raised: the run stops now
        for composite in self._composites:
            self.errors += composite.error_items
        if self._finish is not None:
            return self._finish(collected if collected is not None else [])
        return collected if self._result is None and keep else None

    def _outputs(self, items: Iterable[Any]) -> Generator[Any, None, None]:
        """The items that leave the stream, as they come (read in the main program)."""
        if not self._top:
            yield from items
            return
        pool: IMap[Any] | Literal[False] = False       # 'inline': evaluated by the run itself
        if self.worker_type != "inline":
            pool = IMap(worker_type=self.worker_type, worker_num=self.worker_num,
                        name="papy.inline")
        pipers = [self._piper(stage, pool) for stage in self._top]
        plumber = Plumber()
        plumber.add_pipe(tuple(pipers))
        yield from plumber.stream([items])

    def _piper(self, stage: Any, pool: IMap[Any] | Literal[False]) -> Piper:
        if type(stage) is _Job:
            return Piper(Worker(job_call(stage.func)), parallel=pool, drop_none=True,
                         name=name_of(stage.func))
        body = [self._piper(inner, pool) for inner in stage.body]
        composite: Reducer | Frame
        if type(stage) is _Reduce:
            composite = Reducer(fold_call(stage.fold), store=stage.store, emit=stage.emit,
                                parallel=pool, body=body, every=stage.every,
                                interval=stage.interval, name=name_of(stage.fold))
        else:
            assert stage.end is not None
            composite = Frame(frame_call(stage.start), frame_call(stage.end), body=body,
                              store=stage.store, emit=stage.emit, parallel=pool,
                              name=name_of(stage.start))
        self._composites.append(composite)
        return composite


def map(func: Callable[..., Any], *iterables: Iterable[Any],  # noqa: A001 - job_stream's
        **work: Any) -> list[Any]:
    """``[func(*args) for args in zip(*iterables)]``, in parallel, in input order (the
    keywords go to ``Work``, e.g. ``worker_type='thread'``). An item that fails raises
    its error (the first one found) after the run."""
    results: dict[int, Any] = {}
    stream = Work(list(builtins.map(Args, itertools.count(), *iterables)), **work)

    @stream.job
    def apply(index: int, *args: Any) -> tuple[int, Any]:
        return index, func(*args)

    @stream.result
    def place(pair: tuple[int, Any]) -> None:
        results[pair[0]] = pair[1]

    stream.run()
    if stream.errors:
        raise stream.errors[0]
    return [results[k] for k in range(len(results))]
