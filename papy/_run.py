"""Run: everything one run of a pipeline creates, owned by one object.

Threads of a run and what each does:

    scheduler   (one, papy._scheduler) admits input items, pushes inboxes into IMap tasks,
                takes their results, evaluates linear Pipers, settles, produces and routes
                every batch; the only thread that touches Pipes and nodes
    input readers  (imap.IterableSource, one per input that may wait for data) read a user
                iterable behind the stop gate; steady inputs (lists, ranges) need none
    IMap threads   (each IMap's feeder and slots) evaluate what the nodes' PushSources hold
    plunger     (Plumber.run() .. pause()) takes whole batches of every output, discards
                (papy._run_outputs: it, collect() and drain() read the outputs)
    progress    (Plumber(progress=...)) reads the counters
    readers     the user's threads reading output Pipers (next(piper), for x in piper)

How an item flows through a fan-out and a join (``a -> (b, c) -> d``, all on one IMap)::

    input --Source--> Pipe(a) --a.feed--> PushSource(a) --IMap--> take_ready --settle-->
      +--> Pipe(b) --b.feed--> PushSource(b) --IMap--> ... --> Pipe(d, 0) --+
      +--> Pipe(c) --c.feed--> PushSource(c) --IMap--> ... --> Pipe(d, 1) --+--zip--> d ...
                                                       d --> Outlet --> readers, plunger

Life cycle (``RunState``, changed only in ``_move`` under ``_lock``)::

    BUILDING --start--> RUNNING --stop--> STOPPING --> STOPPED   (dispose: tasks removed)
    BUILDING --dispose--> STOPPED

Shutdown order of ``stop()``: 1. close the input gate (inputs end at their next pull; a
``tail -f`` input waiting on ``current_stop_event()`` wakes at once); 2. graceful: the
outputs are read to their end (by the plunger if it runs, else here, results discarded);
forced: the scheduler is told to quit and the Outlets are closed with the reason; 3. join
the scheduler; 4. stop every IMap of the run (forced: workers killed); 5. close the input
readers (one blocked inside a user iterator is abandoned after a grace); 6. join the
plunger and the progress thread. The failures collected meanwhile are raised by the owner
(``Plumber.wait``, ``stop``, ``chinkup``, or the reader of a standalone Piper at its end).
"""
from __future__ import annotations

import enum
import functools
import logging
import threading
import warnings
from typing import TYPE_CHECKING, Any

from ._channels import Outlet, Pipe, Wakeup
from ._errors import PiperError
from ._failures import StopRun
from ._nodes import Node
from ._outputs import OutputReader
from ._product import join_node
from ._run_outputs import RunOutputs
from ._runtime import Feed, RunContext, raise_failures
from ._scheduler import READ_AHEAD, Source, schedule

if TYPE_CHECKING:
    from imap import IMap

    from ._counters import PiperCounters
    from ._piper import Piper

log = logging.getLogger(__name__)

__all__ = ["Run", "RunState"]

#: the window of a run without IMaps (linear Pipers only)
LINEAR_WINDOW = 1024
#: seconds a forced stop waits for a scheduler busy in a linear Piper's function
JOIN_GRACE = 5.0


class RunState(enum.Enum):
    BUILDING = "building"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


_MOVES = {
    "start": {RunState.BUILDING},
    "stop": {RunState.RUNNING},
    "dispose": {RunState.BUILDING, RunState.STOPPED},
}


class Run(RunOutputs):
    """One run of a pipeline (see the module docstring). Built by ``Dagger.connect`` or
    ``Piper.connect``, started by ``start()``, ended by ``stop()``."""

    def __init__(self, name: str, standalone: bool = False):
        self.name = name
        self.standalone = standalone        # Pipers used by hand: readers raise failures
        self.context = RunContext(name, standalone=standalone)
        self.wakeup = Wakeup()
        self.nodes: list[Node] = []
        self.sources: list[Source] = []
        self.readers: dict[int, OutputReader] = {}
        self._node_of: dict[int, Node] = {}
        self._pipers: dict[int, Piper] = {}
        self._started: set[int] = set()
        self._readers_of: dict[int, list[Piper]] = {}     # who reads a Piper's output
        self._state = RunState.BUILDING
        self._lock = threading.Lock()
        self._scheduler: threading.Thread | None = None
        self._aborting = False
        self._imaps: list[IMap[Any]] = []
        super().__init__()                  # RunOutputs: the plunger, outputs_ended
        self.progress: Any = None           # a papy._progress.Progress, owned by the run

    # -- building --------------------------------------------------------------------------
    @property
    def state(self) -> RunState:
        return self._state

    def _move(self, action: str, to: RunState | None) -> RunState:
        with self._lock:
            before = self._state
            if before not in _MOVES[action]:
                raise PiperError(f"{self.name}: cannot {action} a run that is "
                                 f"{before.value}")
            if to is not None:
                self._state = to
            return before

    def add_node(self, pipers: tuple[Piper, ...], inbox: list[Any],
                 stage_inputs: tuple[tuple[int, ...], ...] | None = None) -> Node:
        """Add a node reading ``inbox``: upstream Pipers of this run and/or iterables
        (``pipers``, ``stage_inputs``: a fused group, see papy._nodes.Node)."""
        if self._state is not RunState.BUILDING:
            raise PiperError(f"piper {pipers[-1].name!r}: its pipeline is already started; "
                             f"connect every Piper before starting")
        upstream: list[Node | None] = []
        for source in inbox:
            if _is_piper(source):
                node = self._node_of.get(id(source))
                if node is None or node.piper is not source:
                    raise PiperError(f"piper {pipers[0].name!r}: its input {source.name!r} "
                                     f"is not connected (or runs fused in another Piper); "
                                     f"connect it first")
                upstream.append(node)
            else:
                upstream.append(None)
        pipes = [Pipe() for _ in inbox]
        # a Reducer's, a Frame's node; a product's (combine='product'); else a Node
        node_type = getattr(pipers[-1], "node_type", None) or join_node(pipers[0], len(inbox))
        node = node_type(pipers, pipes, self.context, stage_inputs)
        if node.imap is not None:
            self.add_pool(node.imap, node.name)
            node.add_task(self.wakeup.poke)
        attach = getattr(node, "attach", None)
        if attach is not None:
            attach(self)        # a composite node: the pools and Pipers of its body
        for k, (source, up, pipe) in enumerate(zip(inbox, upstream, pipes, strict=True)):
            pipe.reader = pipers[0].name
            if up is not None:
                up.outputs.append(pipe)
                self._readers_of.setdefault(id(source), []).append(pipers[0])
                node.input_names.append(source.name)
            else:
                label = (f"input of piper {pipers[0].name!r}" if len(inbox) == 1 else
                         f"input {k} of piper {pipers[0].name!r}")
                feed = source if isinstance(source, Feed) else Feed(source, self.context,
                                                                    label)
                self.sources.append(Source(_as_source(feed, label), pipe, label))
                node.input_names.append(f"input {k}")
        self.nodes.append(node)
        for piper in pipers:
            self._node_of[id(piper)] = node
            self._pipers[id(piper)] = piper
        return node

    def add_pool(self, imap: IMap[Any], name: str) -> None:
        """An IMap this run starts and stops (it must not be started yet)."""
        if imap.started:
            raise PiperError(f"piper {name!r}: its IMap is already started; connect "
                             f"every Piper that shares it before starting")
        if imap not in self._imaps:
            self._imaps.append(imap)

    def adopt(self, piper: Piper, node: Any) -> None:
        """``piper`` runs inside a composite node (the body of a Reducer or a Frame) as
        ``node``: its counters are read there."""
        self._node_of[id(piper)] = node
        piper._run = self

    def forget(self, piper: Piper) -> None:
        self._node_of.pop(id(piper), None)

    def node_of(self, piper: Piper) -> Node | None:
        return self._node_of.get(id(piper))

    def counters(self, piper: Piper) -> PiperCounters:
        return self._node_of[id(piper)].counters_of(piper)

    def reads(self, piper: Piper) -> list[Piper]:
        """The Pipers of this run that read ``piper`` (fused: the chain's next one)."""
        node = self._node_of.get(id(piper))
        if node is None:
            return []
        if node.piper is not piper:
            chain = node.pipers
            later = chain[chain.index(piper) + 1]
            return [later] if id(later) in self._node_of else []
        return [p for p in self._readers_of.get(id(piper), []) if id(p) in self._node_of]

    # -- running ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start every IMap of the run that is not started, then the scheduler."""
        self._move("start", RunState.RUNNING)
        try:
            for node in self.nodes:
                if not node.outputs:
                    node.make_output(Outlet(node.name, self.wakeup))
                    self.readers[id(node.piper)] = OutputReader(
                        node, self._reader_ended, self._raise_at_end)
            for imap in self._imaps:
                if not imap.started:
                    imap.start()
            for source in self.sources:     # may start input readers: after the pools
                source.source.notify(self.wakeup.poke)
        except BaseException:
            self._stop_imaps(forced=True)
            with self._lock:
                self._state = RunState.STOPPED
            raise
        self._scheduler = threading.Thread(target=self._schedule, daemon=True,
                                           name=f"papy-scheduler-{self.name}")
        self._scheduler.start()

    def window(self) -> int:
        """The most items the run holds (see papy._scheduler): the buffers its IMaps have
        in force now (a default buffer of large items holds fewer), plus the blocks."""
        imaps = {id(node.imap): node.imap for node in self.nodes if node.imap is not None}
        buffers = sum(imap.buffer_limit or imap.buffer or imap.stride
                      for imap in imaps.values())
        return (buffers or LINEAR_WINDOW) + self._blocks

    @functools.cached_property
    def _blocks(self) -> int:
        """Items ``consume`` and ``produce`` blocks may need at once."""
        return sum(node.head.consume * node.stride + node.piper.produce * node.stride
                   for node in self.nodes)

    def _schedule(self) -> None:
        try:
            schedule(self.nodes, self.sources, self.window, self.wakeup,
                     lambda: self._aborting)
        except StopRun as stop:     # fail_fast, or the output closed: papy._failures
            self._abort_nodes(stop.reason)
        except BaseException as exc:  # noqa: BLE001 - a failure of the run, never lost
            if self._aborting:
                return
            self.context.fail(exc, "the scheduler of the run failed")
            self._abort_nodes(exc)

    def _abort_nodes(self, reason: BaseException) -> None:
        for node in self.nodes:
            node.abort()
            if node.outlet is not None:
                node.outlet.close(aborted=reason)

    def _raise_at_end(self) -> None:
        """A hand reader reached the end of an output: Pipers used without a Plumber raise
        the failures of their run there."""
        if self.standalone:
            raise_failures(self.context.take_failures(), self.name)

    def start_piper(self, piper: Piper) -> None:
        if self._state is RunState.BUILDING:
            self.start()
        self._started.add(id(piper))

    def unstart_piper(self, piper: Piper) -> None:
        self._started.discard(id(piper))

    def unstart_all(self) -> None:
        self._started.clear()

    def piper_started(self, piper: Piper) -> bool:
        return id(piper) in self._started

    def piper_finished(self, piper: Piper) -> bool:
        reader = self.readers.get(id(piper))
        if reader is not None:
            return reader.finished
        node = self._node_of.get(id(piper))
        return node is not None and node.done

    # -- stopping --------------------------------------------------------------------------
    def stop(self, forced: bool = False) -> None:
        """End the run (see the shutdown order in the module docstring). A no-op when it
        is not running. Failures are left for the owner to raise."""
        with self._lock:
            if self._state is not RunState.RUNNING:
                return
            self._state = RunState.STOPPING
        self.context.request_stop()
        try:
            if not forced:
                plunger = self._plunger
                if plunger is not None and plunger.is_alive() and not self._pausing:
                    plunger.join()
                self.drain()
                self._join_scheduler(None)
        finally:
            self._aborting = True           # forced, or an exception above
            self.wakeup.poke()
            self._join_scheduler(JOIN_GRACE)
            self._stop_imaps(forced=forced)
            if forced:
                self._abort_nodes(PiperError(f"{self.name} was stopped"))
            for source in self.sources:
                source.close()
            self.pause()
            self._join_plunger()
            self._outputs_done()
            progress, self.progress = self.progress, None
            if progress is not None:
                progress.stop()
            with self._lock:
                self._state = RunState.STOPPED

    def _join_scheduler(self, timeout: float | None) -> None:
        scheduler = self._scheduler
        if scheduler is None or scheduler is threading.current_thread():
            return
        scheduler.join(timeout)
        if scheduler.is_alive():
            warnings.warn(f"{self.name}: the scheduler is stuck in a linear Piper's function "
                          f"and is abandoned (a daemon thread); make that function return",
                          RuntimeWarning, stacklevel=3)

    def _stop_imaps(self, forced: bool) -> None:
        for imap in self._imaps:
            if imap.started:
                try:
                    imap.stop(forced=forced)
                except Exception as exc:  # noqa: BLE001 - recorded, the others are stopped
                    self.context.fail(exc, f"stopping {imap!r}")

    def dispose(self) -> None:
        """Remove the IMap tasks of a run that is not running (disconnect)."""
        self._move("dispose", RunState.STOPPED)
        for node in self.nodes:
            node.remove_task()

    def remove(self, piper: Piper) -> None:
        """Disconnect one Piper of a run that is not running; once no Piper of its node is
        left, the node goes with its task, its inputs and the Pipes that fed it."""
        node = self._node_of.pop(id(piper), None)
        self._pipers.pop(id(piper), None)
        self._started.discard(id(piper))
        if node is None or any(n is node for n in self._node_of.values()):
            return
        node.remove_task()
        self.nodes.remove(node)
        for other in self.nodes:
            other.outputs = [p for p in other.outputs if p not in node.inputs]
        self.sources = [s for s in self.sources if s.pipe not in node.inputs]
        for readers in self._readers_of.values():
            readers[:] = [p for p in readers if p is not node.head]

    def pipers(self) -> list[Piper]:
        return list(self._pipers.values())


def _is_piper(obj: object) -> bool:
    from ._piper import Piper
    return isinstance(obj, Piper)


def _as_source(feed: Feed, label: str) -> Any:
    """A Feed as an ``imap.BatchSource``: read in bulk when it is steady, else by a reader
    thread (``imap.IterableSource``)."""
    gated = feed.gated()
    if gated is not None:
        return gated
    from imap import IterableSource
    return IterableSource(feed, read_ahead=READ_AHEAD, name=label)
