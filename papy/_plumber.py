"""Plumber: a Dagger that runs, with a state machine and a background *plunger* thread.

    user thread                          plunger thread (run() .. pause()/end)
    -----------                          --------------------------------------
    start(datas): connect, start IMaps
    run() -----------------------------> reads the output Pipers round-robin, one item
                                         each, discards them (output Pipers should store
                                         or print their results); at the end: FINISHED
    wait(): until FINISHED or a failure
    pause() --- sets _pausing ---------> stops at the next round boundary
    run() again: the same thread goes on if it had not stopped yet, else a new one
    stop(): end inputs, drain, stop IMaps, disconnect

States (changed only by ``_move`` under ``_lock``; the plunger only moves RUNNING -> FINISHED)::

    IDLE --start--> STARTED --run--> RUNNING --(outputs ended)--> FINISHED
    RUNNING/FINISHED --pause--> PAUSED --run--> RUNNING   (pause() does not wait)
    STARTED/PAUSED --stop--> IDLE          any but IDLE --chinkup--> IDLE

Shutdown order of ``chinkup()`` and ``stop()``: 1. close the input gate (inputs end at
their next pull, ``load_file(follow=True)`` wakes up at once); 2. join the plunger (running:
it drains what was taken to the end; paused: it finishes the item it waits for); 3. drain
the rest in the caller's thread; 4. stop every IMap (joins its threads and processes);
5. disconnect the Pipers; 6. raise the failures collected during the run.
"""
from __future__ import annotations

import enum
import logging
import threading
import time

from ._dagger import Dagger
from ._errors import PlumberError
from ._runtime import RunContext, raise_failures

log = logging.getLogger("papy")  # one name for the whole package (and "imap")

__all__ = ["Plumber", "PlumberState"]


class PlumberState(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    STARTED = "started"
    RUNNING = "running"
    FINISHED = "finished"
    PAUSED = "paused"
    STOPPING = "stopping"


_S = PlumberState
_ALLOWED = {
    "start": {_S.IDLE},
    "plunge": {_S.IDLE},
    "run": {_S.STARTED, _S.PAUSED},
    "wait": {_S.RUNNING, _S.FINISHED},
    "pause": {_S.RUNNING, _S.FINISHED},
    "stop": {_S.STARTED, _S.PAUSED},
    "chinkup": {_S.STARTED, _S.RUNNING, _S.FINISHED, _S.PAUSED},
}


class Plumber(Dagger):
    """Runs a pipeline. Two ways to drive it:

    1. ``set_inputs([iterables])``; ``plunge()`` (returns at once, runs in the background);
       ``chinkup()`` (graceful stop: what was taken from the inputs reaches the outputs).
    2. ``start(datas)``; ``run()``; ``wait()``; ``pause()``; ``stop()`` -- or, without
       ``run()``, read the output Pipers yourself between ``start`` and ``stop``.

    ``stats``: ``start_time``, ``run_time``, ``pipers_tracked`` ({piper: {index: result}}
    for Pipers with ``track=True``) and ``pipers`` ({piper: PiperCounters}).

    Example (``inc`` a worker function)::

        plumber = Plumber()
        output = Piper(inc, track=True)
        plumber.add_pipe((Piper(inc), output))
        plumber.start([range(3)]); plumber.run(); plumber.wait(); plumber.pause()
        plumber.stop()
        plumber.stats['pipers_tracked'][output]      # {0: 2, 1: 3, 2: 4}
    """

    def __init__(self, logger_options=None, progress=False, **kwargs):
        super().__init__(**kwargs)
        if progress not in (False, True, "auto", "bar", "log", "off"):
            raise ValueError(f"Plumber progress must be True, False or one of 'auto', 'bar', "
                             f"'log', 'off', not {progress!r}")
        self._progress_mode = "auto" if progress is True else progress   # False: none
        self._progress = None                  # the papy._progress.Progress of this run
        if logger_options:
            from ._logging import start_logger
            start_logger(**logger_options)
        self._state = PlumberState.IDLE
        self._lock = threading.Lock()
        self._finished = threading.Event()     # the plunger read every output to its end
        self._pausing = False                  # pause() asked the plunger to stop reading
        self._plunger: threading.Thread | None = None
        self._plunger_active = False           # the plunger goes on reading (under _lock)
        self._datas = None
        self.stats: dict = {"start_time": None, "run_time": None, "pipers_tracked": {},
                            "pipers": {}}

    @property
    def state(self) -> PlumberState:
        return self._state

    def _move(self, action: str, to: PlumberState | None) -> PlumberState:
        """Check that ``action`` is allowed now and move to ``to`` (None: stay)."""
        with self._lock:
            before = self._state
            if before not in _ALLOWED[action]:
                allowed = ", ".join(sorted(s.value for s in _ALLOWED[action]))
                raise PlumberError(f"cannot {action}(): the Plumber is {before.value} "
                                   f"({action}() is allowed when {allowed})")
            if to is not None:
                self._state = to
                log.debug("%r: %s -> %s (%s)", self, before.value, to.value, action)
            return before

    def _set(self, to: PlumberState) -> None:
        with self._lock:
            self._state = to

    # -- the original 1.0 interface ---------------------------------------------------
    def start(self, datas) -> None:
        """Connect ``datas[i]`` to the i-th input Piper and start the IMaps."""
        self._move("start", _S.STARTING)
        try:
            self._start(datas)
        except BaseException:
            self._set(_S.IDLE)
            raise
        self._set(_S.STARTED)

    def _start(self, datas) -> None:
        self._finished.clear()
        context = RunContext(repr(self))
        self.connect(list(datas), context)
        try:
            pipers = self.postorder()
            self.stats = {"start_time": time.time(), "run_time": None,
                          "pipers_tracked": {p: p.tracked for p in pipers if p.track},
                          "pipers": {p: p.counters for p in pipers}}
            Dagger.start(self)
        except BaseException:
            self._stop_imaps()
            self.disconnect(forced=True)
            raise

    def run(self) -> None:
        """Read the outputs in a background thread until they end (or ``pause()``)."""
        self._move("run", _S.RUNNING)
        if self._progress_mode and self._progress_mode != "off" and self._progress is None:
            from ._progress import Progress
            self._progress = Progress(self, self._progress_mode).start()
        with self._lock:
            self._pausing = False
            if self._plunger_active:        # paused while it waited for an item: goes on
                return
        self._join_plunger()                # it is returning (it saw the pause)
        self._plunger_active = True
        self._plunger = threading.Thread(target=self._plunge_outputs, daemon=True,
                                         name=f"papy-plunger-{id(self)}")
        self._plunger.start()

    def _plunge_outputs(self) -> None:
        try:
            ended = self._pull_outputs(self.get_outputs(), self._plunger_should_stop)
        except BaseException as exc:  # noqa: BLE001 - never lost: recorded for wait()
            self._context.fail(exc, "the plunger thread failed")
            ended = True
        with self._lock:
            self._plunger_active = False
            if ended and self._state is _S.RUNNING:
                self._state = _S.FINISHED
        if ended:
            self.stats["run_time"] = time.time() - self.stats["start_time"]
            self._stop_progress()
            self._finished.set()
            log.debug("%r: outputs ended", self)

    def _plunger_should_stop(self) -> bool:
        """Asked by the plunger at each round boundary."""
        with self._lock:
            if self._pausing:
                self._plunger_active = False
            return self._pausing

    def _join_plunger(self) -> None:
        if self._plunger is not None:
            self._plunger.join()
            self._plunger = None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the outputs ended (True) or ``timeout`` passed (False); then raise the
        failures of the run (one as itself, several as an ExceptionGroup). A failure stops
        the inputs, so a pipeline that failed ends soon and wait() raises then."""
        self._move("wait", None)
        finished = self._finished.wait(timeout)
        self._raise_failures()
        return finished

    def pause(self) -> None:
        """Stop reading the outputs, at a round boundary: returns at once; the background
        thread finishes the item it may be waiting for, keeps it, and then stops (parallel
        Pipers go on until their buffers are full). ``run()`` resumes."""
        self._move("pause", _S.PAUSED)
        with self._lock:
            self._pausing = True

    def stop(self) -> None:
        """End the inputs, carry what was taken to the outputs (discarded), stop every
        IMap and disconnect; raises the failures of the run not raised yet."""
        self._move("stop", _S.STOPPING)
        self._stop()

    def _stop(self) -> None:
        try:
            self._context.request_stop()    # also ends an input a paused plunger waits for
            self._join_plunger()
            Dagger.stop(self)
            self.disconnect(forced=True)
        finally:
            if self.stats["start_time"] is not None:
                self.stats["run_time"] = time.time() - self.stats["start_time"]
            self._stop_progress()
            self._set(_S.IDLE)
        self._raise_failures()

    def _stop_progress(self) -> None:
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.stop()     # joins its thread, shows the final figures; never raises

    # -- the seed's interface ---------------------------------------------------------
    def set_inputs(self, datas) -> None:
        """Remember the input iterables for ``plunge()`` (one per input Piper)."""
        self._datas = list(datas)

    def plunge(self, datas=None) -> None:
        """Start processing in the background and return at once."""
        datas = datas if datas is not None else self._datas
        if datas is None:
            raise PlumberError("plunge(): no inputs; call set_inputs([iterables]) first")
        self.start(datas)
        self.run()

    def chinkup(self) -> None:
        """Stop gracefully: every item taken from an input reaches the outputs, then every
        thread and process is joined. Raises the failures of the run."""
        self._move("chinkup", _S.STOPPING)
        self._stop()

    # -- helpers ----------------------------------------------------------------------
    def _raise_failures(self) -> None:
        if self._context is not None:
            raise_failures(self._context.take_failures(), repr(self))

    def save(self, filename: str) -> None:
        """Write the pipeline as a runnable Python module (see ``papy._save``)."""
        from ._save import save_pipeline
        save_pipeline(self, filename)

    def load(self, filename: str) -> None:
        """Add the Pipers and pipes of a module written by ``save`` (runs its code)."""
        from ._save import load_pipeline
        load_pipeline(self, filename)
