"""Piper: a processing node that evaluates a Worker over its inputs, linearly or on an IMap.

    inputs --> inboxes --> consume --> [TaskInput --> IMap task x spawn] --> round_robin
           --> Settled (errors, timing, tracking) --> produce --> outlet (PassThrough | Tee)
           --> Branch per downstream Piper, or the reader of an output Piper
               (``papy._settle.output_reader``: next() and iteration)

(see ``papy._streams`` for each stage, ``papy._settle`` for the results). Pipers that a
Plumber fuses (``papy._fuse``) are connected by ``_absorb``: the last Piper of the chain
builds the task for all of them. Lifecycle, changed under ``Piper._lock``::

    IDLE --connect--> CONNECTED --start--> STARTED --stop--> CONNECTED --disconnect--> IDLE

``finished`` is a fact about the stream (it ended), not a state: it is set by the reader.
"""
from __future__ import annotations

import enum
import itertools
import logging
import numbers
import threading

from . import _ledger as ledger
from ._errors import PiperError, _short_repr
from ._fuse import FusedCall, LinkedCounters
from ._runtime import Feed, RunContext
from ._settle import Settled, output_reader
from ._streams import (Branch, ChainedTaskInput, PassThrough, PiperCounters,
                       TaskInput, Tee, consume, fast_inboxes, inboxes, produce,
                       read_task, round_robin)
from ._worker import BoxingCall, TimedCall, Worker

log = logging.getLogger("papy")  # one name for the whole package (and "imap")

__all__ = ["Piper"]


class PiperState(enum.Enum):
    IDLE = "idle"
    CONNECTED = "connected"
    STARTED = "started"


class Piper:
    """A node of a pipeline: evaluates ``worker`` for every inbox, in order.

    ``Piper(worker, parallel=False, consume=1, produce=1, spawn=1, timeout=None,
    branch=None, debug=False, name=None, track=False, repeat=False, cache=None)``

    - ``worker``: a Worker, a function, a sequence of them, or a Piper (its Worker is used).
    - ``parallel``: an IMap (several Pipers may share one) or False: a *linear* Piper,
      evaluated lazily in the thread that reads it.
    - ``consume``/``produce``/``spawn``/``repeat``: the produce/spawn/consume idiom
      (docs/papy.md); interleaving uses the IMap's ``stride`` (1 for a linear Piper).
    - ``timeout``: seconds each item may take (parallel Pipers): an item still running
      then is stopped (its process or remote worker killed and replaced; on threads it is
      abandoned) and becomes a ``PiperError(TimeoutError)`` in its place.
    - ``branch``: sort key of this Piper among the inputs of a join (docs/papy.md).
    - ``debug``: raise error items instead of passing them on.
    - ``track``: keep ``{index: result}`` in ``tracked`` (``Plumber.stats['pipers_tracked']``).
    - ``cache``: a ``papy.Cache``: the Piper evaluates a copy of its Worker that looks up
      each inbox in the cache first (docs/cache.md).

    Example (a linear Piper, read by hand)::

        >>> def inc(inbox): return inbox[0] + 1
        >>> p = Piper(inc).connect([[1, 2, 3]])
        >>> p.start()
        >>> list(p)
        [2, 3, 4]
    """

    def __init__(self, worker, parallel=False, consume=1, produce=1, spawn=1, timeout=None,
                 branch=None, debug=False, name=None, track=False, repeat=False, cache=None):
        if isinstance(worker, Piper):
            worker = worker.worker
        if not isinstance(worker, Worker):
            try:
                worker = Worker(worker)
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
        if timeout is not None and (not isinstance(timeout, numbers.Real) or timeout <= 0):
            raise ValueError(f"Piper timeout must be None or seconds > 0, not {timeout!r}")
        if timeout is not None and parallel is False:
            log.warning("Piper %r: timeout applies to parallel Pipers only; ignored", name)
        self.worker = worker
        self.parallel = parallel
        self.imap = parallel if parallel is not False else map
        self.consume, self.produce, self.spawn = consume, produce, spawn
        self.timeout, self.branch, self.debug = timeout, branch, bool(debug)
        self.track, self.repeat = bool(track), bool(repeat)
        self.name = name if name is not None else f"piper_{id(self)}"
        self.counters = PiperCounters()
        self.tracked: dict = {}
        self.finished = False
        self.inbox: list = []
        self.outbox = None
        self._state = PiperState.IDLE
        self._lock = threading.Lock()
        self._context: RunContext | None = None
        self._upstream: list[Piper] = []
        self._branches: list[Branch] = []   # readers of this Piper's output
        self._outlet = None                 # PassThrough or Tee, made at the first read
        self._reader = None                 # an output Piper's results, once read
        self._next_item = None              # gives the next output item (made by connect)
        self._direct = False                # _next_item is the output generator itself
        self._bound_reader = None           # the Piper that reads outbox directly, in C
        self._absorbs: tuple = ()           # fused: the Pipers whose Workers run in my task
        self._owner = None                  # fused: the Piper whose task runs my Worker

    # -- properties -------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._state is not PiperState.IDLE

    @property
    def started(self) -> bool:
        return self._state is PiperState.STARTED

    @property
    def stride(self) -> int:
        """Items per round of the interleavings: the IMap's stride, 1 for a linear Piper."""
        return self.parallel.stride if self.parallel is not False else 1

    @property
    def tees(self) -> list:
        """The Branches that downstream Pipers read."""
        return list(self._branches)

    # -- lifecycle --------------------------------------------------------------------
    def connect(self, inbox) -> "Piper":
        """Connect the inputs: a list of upstream Pipers and/or iterables (one per input).

        ``piper.connect([[1, 2, 3]])`` gives one input stream; ``piper(inbox)`` is the same.
        """
        context = next((p._context for p in inbox if isinstance(p, Piper) and p._context),
                       None) if isinstance(inbox, (list, tuple)) else None
        return self._connect(inbox, context or RunContext(self.name, standalone=True))

    __call__ = connect

    def _connect(self, inbox, context: RunContext, absorbs=()) -> "Piper":
        """``absorbs``: fused (``papy._fuse``), the Pipers upstream of this one whose
        Workers run before this one's in its task; ``inbox`` is then the first one's."""
        if not isinstance(inbox, (list, tuple)) or not inbox:
            raise PiperError(f"piper {self.name!r}: connect takes a non-empty list of "
                             f"upstream Pipers and/or iterables, not {inbox!r}")
        for source in inbox:
            if not isinstance(source, Piper) and not hasattr(source, "__iter__"):
                raise PiperError(f"piper {self.name!r}: input {source!r} is neither a "
                                 f"Piper nor an iterable")
        with self._lock:
            if self._state is not PiperState.IDLE:
                raise PiperError(f"piper {self.name!r} is already connected")
            if self.parallel is not False and self.parallel.started:
                raise PiperError(f"piper {self.name!r}: its IMap is already started; "
                                 f"connect every Piper that shares it before starting")
            inputs = [self._input(k, source, context) for k, source in enumerate(inbox)]
            self._context = context
            self._upstream = [s for s in inbox if isinstance(s, Piper)]
            self._reset_stream()
            self._absorbs = tuple(absorbs)
            for k, piper in enumerate(absorbs):
                piper.counters = LinkedCounters(self.counters, first=k == 0)
            self.outbox = self._build(inputs, context)
            self.inbox = [absorbs[-1]] if absorbs else list(inbox)
            self._state = PiperState.CONNECTED
        return self

    def _absorb(self, inbox, context: RunContext, owner: "Piper") -> None:
        """Connect as part of ``owner``'s task (fused, ``papy._fuse``): no task, no stream
        of its own; ``owner._connect`` reads this Piper's inputs if it is the first."""
        with self._lock:
            if self._state is not PiperState.IDLE:
                raise PiperError(f"piper {self.name!r} is already connected")
            self._context = context
            self._upstream = [s for s in inbox if isinstance(s, Piper)]
            self._reset_stream()
            self._owner = owner
            self.inbox = list(inbox)
            self._state = PiperState.CONNECTED

    def _input(self, k, source, context):
        if isinstance(source, Piper):
            return source._open_branch(self)
        if isinstance(source, Feed):
            return source
        return Feed(source, context, f"input {k} of piper {self.name!r}")

    def _build(self, inputs, context):
        stride = self.stride
        head = self._absorbs[0] if self._absorbs else self     # reads the inputs
        stream, counted = fast_inboxes(inputs, head, context) if head.consume == 1 \
            else (None, False)
        boxing = stream is not None         # the stream gives items, not inboxes
        count_in = boxing and not counted   # Settled counts the inboxes
        if stream is None:
            stream = consume(inboxes(inputs, head, context), head.consume, stride)
        if self._absorbs:
            func = FusedCall([p.worker for p in self._absorbs] + [self.worker], boxing)
        else:
            func = BoxingCall(self.worker) if boxing else TimedCall(self.worker)
        retry = False
        if self.parallel is False:
            shared = iter(stream)
            tasks = [map(func, shared) for _ in range(self.spawn)]
        else:
            chained = id(self.parallel) in self._imaps_upstream()
            task_input = (ChainedTaskInput if chained else TaskInput)(stream)
            tasks = self._add_tasks(func, task_input)
            if len(tasks) == 1:
                retry = True            # Settled reads the task itself (its fast path)
            else:
                tasks = [read_task(task, None, self.name) for task in tasks]
        raw = tasks[0] if len(tasks) == 1 else round_robin(tasks, stride)
        if self.produce == 1 and not self.debug:    # the common case: one generator
            outbox = Settled(self, raw, True, count_in, retry)
            self._next_item, self._direct = outbox.__next__, True
            return outbox
        self._next_item, self._direct = self._pull, False
        return produce(Settled(self, raw, False, count_in, retry), self.produce, stride,
                       self.repeat, self._explode)

    def _add_tasks(self, func, task_input) -> list:
        imap, tasks = self.parallel, []
        try:
            for _ in range(self.spawn):
                # the IMap ends an item that runs past the timeout (a process or remote
                # worker is killed and replaced, a thread abandons it): a TimeoutError in
                # that item's place, so the stream keeps its order and length
                tasks.append(imap.add_task(func, task_input, item_timeout=self.timeout))
        except Exception as exc:
            if tasks:
                imap.pop_task(len(tasks))
            raise PiperError(f"piper {self.name!r}: cannot add its task to {imap!r}: "
                             f"{exc}") from exc
        ledger.record(imap, self)
        self.counters.waits_on = tuple(tasks)
        return tasks

    def _imaps_upstream(self) -> set:
        """ids of the IMaps of every Piper upstream of this one (transitively)."""
        found, seen, stack = set(), set(), list(self._upstream)
        while stack:
            piper = stack.pop()
            if id(piper) not in seen:
                seen.add(id(piper))
                if piper.parallel is not False:
                    found.add(id(piper.parallel))
                stack.extend(piper._upstream)
        return found

    def start(self, stages=None) -> None:
        """Start evaluating: stage 0 (the Piper), stages 1 and 2 (its IMap, if not yet).

        Pipers that share an IMap must all be connected before any of them starts it.
        """
        linear = self.parallel is False
        stages = tuple(stages) if stages is not None else ((0,) if linear else (0, 1, 2))
        with self._lock:
            if self._state is PiperState.IDLE:
                raise PiperError(f"piper {self.name!r} is not connected; connect it first")
            if self._state is PiperState.STARTED:
                raise PiperError(f"piper {self.name!r} is already started")
            if not linear and (1 in stages or 2 in stages) and not self.parallel.started:
                self.parallel.start()
            if linear or 2 in stages:
                self._state = PiperState.STARTED

    def stop(self, forced=False, ends=None) -> None:
        """Stop: a finished Piper, or any with ``forced=True``. Stops the IMap (and so the
        other Pipers on it); a linear Piper ends its inputs instead."""
        with self._lock:
            if self._state is not PiperState.STARTED:
                raise PiperError(f"piper {self.name!r} is not started")
            if not self.finished and not forced:
                raise PiperError(f"piper {self.name!r} has not finished; read it to the "
                                 f"end or stop(forced=True)")
            if self.parallel is False:
                self._context.request_stop()
            else:
                ledger.stop_imap(self.parallel, **({"forced": True} if forced else {}))
            self._state = PiperState.CONNECTED

    def disconnect(self, forced=False) -> None:
        """Undo connect: removes this Piper's tasks from its (stopped) IMap."""
        with self._lock:
            if self._state is PiperState.IDLE:
                raise PiperError(f"piper {self.name!r} is not connected")
            if self._state is PiperState.STARTED:
                raise PiperError(f"piper {self.name!r} is started; stop it first")
            if self.parallel is not False:
                self._remove_tasks(forced)
            for upstream in self._upstream:
                upstream._close_branch(self)
            self._upstream, self.inbox, self.outbox = [], [], None
            self._absorbs, self._owner = (), None
            self._reset_stream()
            self._state = PiperState.IDLE

    def _remove_tasks(self, forced) -> None:
        imap = self.parallel
        if imap.started:
            raise PiperError(f"piper {self.name!r}: its IMap is running; stop it first")
        if not ledger.remove(imap, self, self.spawn, forced):
            raise PiperError(f"piper {self.name!r}: its tasks are not the last ones added "
                             f"to {imap!r}; disconnect downstream Pipers first, or use "
                             f"forced=True to remove all tasks")

    def _reset_stream(self) -> None:
        self.finished = False
        self._bound_reader = None
        self._outlet = None
        self._reader = None
        self._next_item = None
        self.tracked = {}
        self.counters = PiperCounters()

    # -- fan-out ----------------------------------------------------------------------
    def _open_branch(self, reader) -> Branch:
        with self._lock:
            if self._outlet is not None:
                raise PiperError(f"piper {self.name!r} is already being read; connect "
                                 f"every downstream Piper before reading")
            branch = Branch(self, reader)
            branch.index = len(self._branches)
            self._branches.append(branch)
        return branch

    def _close_branch(self, reader) -> None:
        with self._lock:
            self._branches = [b for b in self._branches if b.reader is not reader]
            for k, branch in enumerate(self._branches):
                branch.index = k
            self._outlet = None

    def _outlet_reader(self, index: int):
        """The function that gives reader ``index`` its next item (makes the outlet once:
        after every downstream Piper opened its Branch)."""
        with self._lock:
            if self._outlet is None:
                count = len(self._branches)
                self._outlet = PassThrough(self._next_item) if count <= 1 else \
                    Tee(self._next_item, count)
            return self._outlet.reader(index)

    def _iterator_for(self, branch: Branch):
        """What a downstream Piper iterates: the output stream itself when it is the only
        reader and nothing is done per item after the stream (no produce, no debug)."""
        reader = self._outlet_reader(branch.index)
        return self.outbox if self._direct and reader is self._next_item else branch

    # -- reading ----------------------------------------------------------------------
    def __iter__(self):
        if self._state is PiperState.STARTED and not self._branches and self._owner is None:
            if self._reader is None:
                self._reader = output_reader(self)
            return self._reader     # C speed per item (see papy._settle.output_reader)
        return self             # next() says why it cannot be read

    def __next__(self):
        reader = self._reader
        if reader is not None and self._state is PiperState.STARTED:
            return next(reader)
        return self.next()

    def next(self):
        """The next result of an output Piper (one that no downstream Piper reads)."""
        if self._state is not PiperState.STARTED:
            raise PiperError(f"piper {self.name!r} is not started")
        if self._reader is None:
            if self._branches or self._owner is not None:
                raise PiperError(f"piper {self.name!r} is read by downstream Pipers; read "
                                 f"the output Pipers instead")
            self._reader = output_reader(self)
        return next(self._reader)

    def _pull(self):
        try:
            item = next(self.outbox)
        except StopIteration:
            self._end_stream()
            raise
        self.counters.items_out += 1
        if self.debug and isinstance(item, PiperError):
            raise item
        return item

    def _end_stream(self) -> None:
        self.finished = True
        for piper in self._absorbs:     # fused: their streams end with this one's
            piper.finished = True

    def _explode(self, result, n: int, repeat: bool) -> list:
        if repeat or isinstance(result, BaseException):
            return [result] * n
        try:
            values = list(itertools.islice(iter(result), n))
        except TypeError:
            values = []
        if len(values) == n:
            return values
        error = PiperError(ValueError(
            f"piper {self.name!r} has produce={n}, so its function must return a sequence "
            f"of at least {n} items (or use repeat=True); it returned {_short_repr(result)}"))
        log.error("%s", error.args[0])
        self.counters.errors += 1
        return [error] * n

    def __repr__(self) -> str:
        return f"Piper({self.name})"
