"""Piper: a node of a pipeline, described (a Worker, a pool, produce/spawn/consume, ...).

A Piper holds its configuration only. Connecting it makes it part of a run
(``papy._run.Run``), which owns everything the run creates; the Piper keeps a reference to
that run, through which ``connect/start/stop/disconnect``, ``next()``, ``counters``,
``tracked`` and ``finished`` (the original PaPy API) work. Its life cycle, as the original's::

    IDLE --connect--> CONNECTED --start--> STARTED --stop--> CONNECTED --disconnect--> IDLE

is read from the run: ``connected`` (it is a node of a run), ``started`` (started and its
run running), ``finished`` (its output stream ended).
"""
from __future__ import annotations

import logging
import operator
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence

from imap import check_seconds

from ._counters import PiperCounters
from ._errors import PiperError
from ._product import COMBINES
from ._worker import Worker

if TYPE_CHECKING:
    from imap import IMap

    from ._cache import Cache
    from ._run import Run

log = logging.getLogger(__name__)

__all__ = ["Piper"]


def _not_readable(piper: "Piper") -> Callable[[], Any]:
    def raise_why() -> Any:
        raise PiperError(piper._why_not_readable())
    return raise_why


class Piper:
    """A node of a pipeline: evaluates ``worker`` for every inbox, in order.

    ``Piper(worker, parallel=False, consume=1, produce=1, spawn=1, timeout=None,
    branch=None, debug=False, name=None, track=False, repeat=False, cache=None,
    plain=False, drop_none=False, combine='zip')``

    - ``worker``: a Worker, a function, a sequence of them, or a Piper (its Worker is used).
    - ``plain``: the function(s) take the items, not the inbox: ``f(x)`` (``f(x, y)`` for a
      join), as ``Worker(f, plain=True)``; e.g. ``Piper(float, plain=True)``.
    - ``parallel``: an IMap (several Pipers may share one) or False: a *linear* Piper,
      evaluated by the run itself (in its scheduler thread), in bounded chunks.
    - ``consume``/``produce``/``spawn``/``repeat``: the produce/spawn/consume idiom
      (docs/papy.md); interleaving uses the IMap's ``stride`` (1 for a linear Piper).
    - ``timeout``: seconds each item may take (parallel Pipers): an item still running
      then is stopped (its process or remote worker killed and replaced; on threads it is
      abandoned) and becomes a ``PiperError(TimeoutError)`` in its place.
    - ``branch``: sort key of this Piper among the inputs of a join (docs/papy.md).
    - ``debug``: raise error items instead of passing them on.
    - ``name``: default, the function's name (``'f>g'`` for a composition), numbered by
      the Dagger it joins when another of its Pipers has it already (``'f_2'``).
    - ``track``: keep ``{index: result}`` in ``tracked`` (``Plumber.stats['pipers_tracked']``).
    - ``cache``: a ``papy.Cache``: the Piper evaluates a copy of its Worker that looks up
      each inbox in the cache first (docs/cache.md).
    - ``drop_none``: a result ``None`` sends no item downstream. Whatever this says, a
      result ``papy.Multiple(iterable)`` sends each of its non-None elements as an item
      (docs/streams.md).
    - ``combine``: how a join makes its inboxes from its inputs: ``'zip'`` (by position)
      or ``'product'`` (the cross product, ``itertools.product`` order: input 0 streams,
      the others are read to their end first; papy._product).

    Example (a linear Piper, read by hand)::

        >>> def inc(inbox): return inbox[0] + 1
        >>> p = Piper(inc).connect([[1, 2, 3]])
        >>> p.start()
        >>> list(p)
        [2, 3, 4]
    """

    #: may be part of a fused segment (papy._fuse); composite nodes (Reducer, Frame) are not
    fusable = True

    def __init__(self, worker: Worker | Piper | Callable[..., Any] | Sequence[Any],
                 parallel: IMap[Any] | Literal[False] | None = False, consume: int = 1,
                 produce: int = 1, spawn: int = 1, timeout: float | None = None,
                 branch: Any = None, debug: bool = False, name: str | None = None,
                 track: bool = False, repeat: bool = False, cache: Cache | None = None,
                 plain: bool = False, drop_none: bool = False, combine: str = "zip"):
        if isinstance(worker, Piper):
            worker = worker.worker
        if plain and isinstance(worker, Worker):
            raise PiperError("Piper(plain=True) applies to functions; a Worker keeps its own "
                             "convention: give Worker(f, plain=True) instead")
        if not isinstance(worker, Worker):
            try:
                worker = Worker(worker, plain=plain)
            except TypeError as exc:
                raise PiperError(f"Piper needs a Worker, a function or a sequence of them: "
                                 f"{exc}") from exc
        if cache is not None:           # a copy of the Worker that consults the cache
            worker = Worker(worker, cache=cache, name=worker.name)
        if parallel is None:
            parallel = False
        if parallel is not False and not all(
                hasattr(parallel, attr) for attr in ("add_task", "start", "stop", "stride")):
            raise PiperError(f"parallel must be an IMap or False, not {parallel!r}")
        for key, value in (("consume", consume), ("produce", produce), ("spawn", spawn)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Piper {key} must be an int >= 1, not {value!r}")
        timeout = check_seconds(f"Piper {name or worker.__name__!r}: timeout", timeout,
                                allow_zero=False, infinite_is_none=True)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Piper name must be a string, not {type(name).__name__}")
        if combine not in COMBINES:
            raise ValueError(f"Piper combine must be one of {', '.join(map(repr, COMBINES))}, "
                             f"not {combine!r}")
        if timeout is not None and parallel is False:
            warnings.warn(f"Piper {name or worker.__name__!r}: timeout applies to parallel "
                          f"Pipers only (a linear Piper runs in the pipeline's own thread, "
                          f"which cannot be interrupted); it is ignored", stacklevel=2)
        self.worker: Worker = worker
        self.parallel: IMap[Any] | Literal[False] = parallel
        self.imap: IMap[Any] | type[map[Any]] = parallel if parallel is not False else map
        self.consume, self.produce, self.spawn = consume, produce, spawn
        self.timeout, self.branch, self.debug = timeout, branch, bool(debug)
        self.track, self.repeat = bool(track), bool(repeat)
        self.combine = combine
        self.drop_none = bool(drop_none)
        # default: the function's name ('f', 'f>g' for a composition); a Dagger numbers
        # it when another of its Pipers has that name already ('f_2', 'f_3', ...)
        self.name: str = name if name is not None else worker.__name__
        self._default_name = name is None
        self._run: Run | None = None                # the run this Piper is a node of
        self._next: Callable[[], Any] = _not_readable(self)   # its output, once started

    # -- what the run knows -------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        run = self._run
        return run is not None and run.node_of(self) is not None

    @property
    def started(self) -> bool:
        run = self._run
        return run is not None and run.piper_started(self)

    @property
    def finished(self) -> bool:
        """Its output stream ended (an output Piper: read to its end)."""
        run = self._run
        return run is not None and run.node_of(self) is not None and run.piper_finished(self)

    @property
    def counters(self) -> PiperCounters:
        """Its counters in its (last) run; zeros before the first."""
        run = self._run
        if run is None or run.node_of(self) is None:
            return PiperCounters()
        return run.counters(self)

    @property
    def tracked(self) -> dict[int, Any]:
        """``{index: result}`` of its last run (``track=True``)."""
        run = self._run
        node = run.node_of(self) if run is not None else None
        if node is None or node.piper is not self or node.tracked is None:
            return {}
        return node.tracked

    @property
    def stride(self) -> int:
        """Items per round of the interleavings: the IMap's stride, 1 for a linear Piper."""
        return int(self.parallel.stride) if self.parallel is not False else 1

    @property
    def tees(self) -> list["Piper"]:
        """The connected Pipers that read this one."""
        run = self._run
        return run.reads(self) if run is not None else []

    # -- life cycle ---------------------------------------------------------------------------
    def connect(self, inbox: Any) -> "Piper":
        """Connect the inputs: a list of upstream Pipers and/or iterables (one per input).

        ``piper.connect([[1, 2, 3]])`` gives one input stream; ``piper(inbox)`` is the same.
        Upstream Pipers must be connected first; this Piper joins their run.
        """
        from ._run import Run
        if not isinstance(inbox, (list, tuple)) or not inbox:
            raise PiperError(f"piper {self.name!r}: connect takes a non-empty list of "
                             f"upstream Pipers and/or iterables, not {inbox!r}")
        for source in inbox:
            if not isinstance(source, Piper) and not hasattr(source, "__iter__"):
                raise PiperError(f"piper {self.name!r}: input {source!r} is neither a "
                                 f"Piper nor an iterable")
        if self.connected:
            raise PiperError(f"piper {self.name!r} is already connected")
        runs = {id(p._run): p._run for p in inbox
                if isinstance(p, Piper) and p._run is not None and p.connected}
        if len(runs) > 1:
            raise PiperError(f"piper {self.name!r}: its inputs belong to different pipelines; "
                             f"connect them as one (a Dagger or a Plumber)")
        run = next(iter(runs.values())) if runs else Run(f"piper {self.name!r}",
                                                           standalone=True)
        self._join(run, (self,), list(inbox))
        return self

    __call__ = connect

    def _join(self, run: "Run", pipers: tuple["Piper", ...], inbox: list[Any],
              stage_inputs: tuple[tuple[int, ...], ...] | None = None) -> None:
        """Become (with the Pipers of a fused group) a node of ``run``."""
        run.add_node(pipers, inbox, stage_inputs)
        for piper in pipers:
            piper._run = run
            piper._next = _not_readable(piper)

    def start(self, stages: Any = None) -> None:
        """Start evaluating (the first Piper started starts its whole run: its IMaps and
        the run's scheduler). ``stages`` is accepted for compatibility and ignored."""
        run = self._run
        if not self.connected or run is None:
            raise PiperError(f"piper {self.name!r} is not connected; connect it first")
        if self.started:
            raise PiperError(f"piper {self.name!r} is already started")
        run.start_piper(self)
        reader = run.readers.get(id(self))
        if reader is not None:
            self._next = reader.next_item

    def stop(self, forced: bool = False, ends: Any = None) -> None:
        """Stop its run: a finished Piper, or any with ``forced=True`` (which stops the
        run's IMaps, and so the other Pipers on them). ``ends`` is accepted for
        compatibility and ignored."""
        run = self._run
        if run is None or not self.started:
            raise PiperError(f"piper {self.name!r} is not started")
        if not forced and not self.finished:
            raise PiperError(f"piper {self.name!r} has not finished; read it to the end or "
                             f"stop(forced=True)")
        self._next = _not_readable(self)
        run.stop(forced=forced)
        run.unstart_piper(self)

    def disconnect(self, forced: bool = False) -> None:
        """Undo connect: removes this Piper's task from its (stopped) IMap. A Piper that a
        connected Piper reads is disconnected after it, unless ``forced``."""
        run = self._run
        if not self.connected or run is None:
            raise PiperError(f"piper {self.name!r} is not connected")
        if self.started:
            raise PiperError(f"piper {self.name!r} is started; stop it first")
        readers = [p.name for p in run.reads(self)]
        if readers and not forced:
            raise PiperError(f"piper {self.name!r} is not the last of its pipeline: "
                             f"{readers} read it; disconnect the downstream Pipers first, or "
                             f"use forced=True")
        run.remove(self)
        self._next = _not_readable(self)

    # -- reading ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        return self

    # next(piper) calls what ``_next`` holds (the output reader's C-level ``__next__``, or
    # a function saying why the Piper cannot be read): a property returning that callable
    # makes Python call it directly, without a Python frame per item (35 ns instead of 95)
    __next__ = property(operator.attrgetter("_next"))

    def next(self) -> Any:
        """The next result of an output Piper (one that no downstream Piper reads)."""
        return self._next()

    def _why_not_readable(self) -> str:
        run = self._run
        if run is not None and self.connected and run.reads(self) and self.started:
            return (f"piper {self.name!r} is read by downstream Pipers; read the output "
                    f"Pipers instead")
        return f"piper {self.name!r} is not started"

    def __repr__(self) -> str:
        return f"Piper({self.name})"
