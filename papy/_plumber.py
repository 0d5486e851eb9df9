"""Plumber: a Dagger that runs, with a state machine, as a context manager or in one call.

    user thread(s)                         the run (papy._run), owned by the Plumber while
    --------------                         it is not IDLE
    start(datas): connect, start -------> scheduler thread, IMaps, input readers
    run() ------------------------------> plunger thread: reads every output, discards;
                                           at the end of every output: FINISHED
    wait(): until FINISHED
    pause() ----------------------------> the plunger stops at its next batch boundary
    stop() / chinkup() -----------------> run.stop(): gate closed, drained, joined
    collect(datas) / stream(datas): start, read the outputs, stop, in one call

States (changed only by ``_move``/``_set`` under ``_lock``; the plunger only moves
RUNNING -> FINISHED, through ``_outputs_ended``)::

    IDLE --start--> STARTED --run--> RUNNING --(outputs ended)--> FINISHED
    RUNNING/FINISHED --pause--> PAUSED --run--> RUNNING   (pause() does not wait)
    STARTED/PAUSED --stop--> IDLE          any but IDLE --chinkup--> IDLE

Every call is safe from any thread: the calls that change the state (start, run, pause,
stop, chinkup, plunge) are serialised by ``_calls``; each is either legal in the state it
finds or a PlumberError that says why. ``wait()`` does not take ``_calls``.

Leaving a ``with Plumber() as p:`` block stops a run that is still going (gracefully, or
forced when an exception is propagating), joins every thread and raises the failures.
"""
from __future__ import annotations

import enum
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Literal

from ._cache_run import cache_stats
from ._dagger import Dagger
from ._errors import PlumberError
from ._failures import report_of, silence_stdout
from ._runtime import raise_failures

if TYPE_CHECKING:
    from types import TracebackType

    from ._piper import Piper
    from ._run import Run

log = logging.getLogger(__name__)

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
_PROGRESS_MODES = (False, True, "auto", "bar", "log", "off")


class Plumber(Dagger):
    """Runs a pipeline. Three ways to drive it:

    1. In one call: ``plumber.collect(datas)`` returns ``{output Piper: [items]}``;
       ``for item in plumber.stream(datas)`` gives the items of the output Piper as they
       come. Both start, read to the end, stop and raise the failures of the run.
    2. ``set_inputs([iterables])``; ``plunge()`` (returns at once, runs in the background);
       ``chinkup()`` (graceful stop: what was taken from the inputs reaches the outputs).
    3. ``start(datas)``; ``run()``; ``wait()``; ``pause()``; ``stop()`` -- or, without
       ``run()``, read the output Pipers yourself between ``start`` and ``stop``.

    As a context manager, leaving the block stops what still runs and raises its failures.

    ``stats``: ``start_time``, ``run_time``, ``pipers_tracked`` ({piper: {index: result}}
    for Pipers with ``track=True``), ``pipers`` ({piper: PiperCounters}),
    ``failed_items`` (a ``papy._failures.FailedItems``: the items that failed, by Piper and
    exception type) and ``cache`` ({piper name: {'executed': n, 'cached': n, 'failed': n,
    'upstream_failed': n}} for the Pipers with a cache: docs/cache.md).

    Failed items (a function raised, a timeout, a worker that died) are error items in
    place of their results, and the rest of the run goes on. So that they are never silent:

    - ``report_failures=True`` (default): when a run ends with failed items, a report goes
      to stderr: how many input items failed, by Piper and exception type, each group
      with its first item and the traceback where it was raised;
    - ``fail_fast=True``: the first failed item stops the run at once (nothing more is read
      or evaluated); ``wait()``/``stop()``/``collect()`` raise a PiperError for it, whose
      notes hold the worker-side traceback;
    - ``verbose=True``: a line on stderr for each failed item, as it fails.

    Example (``inc`` a worker function)::

        with Plumber() as plumber:
            output = Piper(inc)
            plumber.add_pipe((Piper(inc), output))
            plumber.collect([range(3)])      # {output: [2, 3, 4]}
    """

    def __init__(self, logger_options: dict[str, Any] | None = None,
                 progress: bool | str = False, fail_fast: bool = False,
                 verbose: bool = False, report_failures: bool = True, **kwargs: Any):
        if logger_options is not None and not isinstance(logger_options, dict):
            raise TypeError(f"Plumber() got {logger_options!r:.60} where its first "
                            f"parameter, logger_options, is a dict of start_logger() "
                            f"options; give the other options by keyword (progress=, "
                            f"fail_fast=, ...) and the Pipers to add_pipe((a, b)) or "
                            f"Plumber(pipers=..., pipes=...)")
        super().__init__(**kwargs)
        if progress not in _PROGRESS_MODES:
            raise ValueError(f"Plumber progress must be True, False or one of 'auto', 'bar', "
                             f"'log', 'off', not {progress!r}")
        self._progress_mode: str | Literal[False] = "auto" if progress is True else progress
        for key, value in (("fail_fast", fail_fast), ("verbose", verbose),
                           ("report_failures", report_failures)):
            if not isinstance(value, bool):
                raise TypeError(f"Plumber {key} must be True or False, not {value!r}")
        self.fail_fast, self.verbose = fail_fast, verbose
        self.report_failures = report_failures
        self._failure_stream: Any = None    # where verbose lines go (None: stderr)
        if logger_options:
            from ._logging import start_logger
            start_logger(**logger_options)
        self._state = PlumberState.IDLE
        self._lock = threading.Lock()       # guards _state
        self._calls = threading.RLock()     # serialises the calls that change the state
        self._run: Run | None = None
        self._datas: list[Any] | None = None
        self.stats: dict[str, Any] = {"start_time": None, "run_time": None,
                                      "pipers_tracked": {}, "pipers": {},
                                      "failed_items": None, "cache": {}}

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

    def _outputs_ended(self) -> None:
        """The plunger read every output to its end (called from its thread)."""
        with self._lock:
            if self._state is _S.RUNNING:
                self._state = _S.FINISHED
        stats = self.stats
        if stats["start_time"] is not None and stats["run_time"] is None:
            stats["run_time"] = time.time() - stats["start_time"]

    # -- the original 1.0 interface ---------------------------------------------------
    def start(self, datas: Any = None) -> None:
        """Connect ``datas[i]`` to the i-th input Piper and start the run."""
        with self._calls:
            self._move("start", _S.STARTING)
            try:
                self._start(datas)
            except BaseException:
                self._set(_S.IDLE)
                raise
            self._set(_S.STARTED)

    def _start(self, datas: Any) -> None:
        if datas is None or isinstance(datas, (str, bytes)) or not hasattr(datas, "__iter__"):
            raise PlumberError(f"start(datas) takes a list with one iterable per input Piper, "
                               f"e.g. start([range(10)]), not {datas!r}")
        self.connect(list(datas))
        run = self.run_of()
        assert run is not None
        try:
            run.on_outputs_ended = self._outputs_ended
            failed = run.context.failed_items
            failed.configure(fail_fast=self.fail_fast, verbose=self.verbose,
                             stream=self._failure_stream)
            pipers = self.postorder()
            self.stats = {"start_time": time.time(), "run_time": None,
                          "pipers_tracked": {p: p.tracked for p in pipers if p.track},
                          "pipers": {}, "failed_items": failed, "cache": {}}
            Dagger.start(self)
            self.stats["pipers"] = {p: p.counters for p in pipers}
            self.stats["cache"] = cache_stats(run, pipers)
            self.stats["pipers_tracked"] = {p: p.tracked for p in pipers if p.track}
            self._run = run
        except BaseException:
            run.stop(forced=True)
            self.disconnect(forced=True)
            raise

    def run(self) -> None:
        """Read the outputs in a background thread until they end (or ``pause()``)."""
        with self._calls:
            self._move("run", _S.RUNNING)
            run = self._run
            assert run is not None
            if self._progress_mode and self._progress_mode != "off" and run.progress is None:
                from ._progress import Progress
                run.progress = Progress(self, self._progress_mode).start()
            run.plunge()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the outputs ended (True) or ``timeout`` passed (False); then raise the
        failures of the run (one as itself, several as an ExceptionGroup). A failure stops
        the inputs, so a pipeline that failed ends soon and wait() raises then."""
        self._move("wait", None)
        run = self._run
        assert run is not None
        finished = run.outputs_ended.wait(timeout)
        self._raise_failures()
        return finished

    def pause(self) -> None:
        """Stop reading the outputs at the next batch boundary: returns at once (parallel
        Pipers go on until the run holds its window of items). ``run()`` resumes."""
        with self._calls:
            self._move("pause", _S.PAUSED)
            assert self._run is not None
            self._run.pause()

    def stop(self) -> None:
        """End the inputs, carry what was taken to the outputs (discarded), stop every
        IMap and disconnect; raises the failures of the run not raised yet."""
        with self._calls:
            self._move("stop", _S.STOPPING)
            self._stop(forced=False)

    def _stop(self, forced: bool) -> None:
        run = self._run
        try:
            if run is not None:
                run.stop(forced=forced)
                run.unstart_all()
            self.disconnect(forced=True)
        finally:
            stats = self.stats
            if stats["start_time"] is not None:
                stats["run_time"] = time.time() - stats["start_time"]
            self._set(_S.IDLE)
        self._report_failed_items()
        self._raise_failures()

    def _report_failed_items(self) -> None:
        """At the end of a run: the report of its failed items on stderr (unless
        ``report_failures`` is off, or ``fail_fast`` raises the failure instead); stdout is
        silenced when its reader went away (``| head``)."""
        failed = self.stats.get("failed_items")
        if failed is None:
            return
        if failed.output_closed:
            silence_stdout()
        if not self.report_failures or self.fail_fast or not failed:
            return
        text = report_of(self)
        try:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            log.error("%s", text)

    # -- the seed's interface ---------------------------------------------------------
    def set_inputs(self, datas: Any) -> None:
        """Remember the input iterables for ``plunge()`` (one per input Piper)."""
        self._datas = list(datas)

    def plunge(self, datas: Any = None) -> None:
        """Start processing in the background and return at once."""
        with self._calls:
            datas = datas if datas is not None else self._datas
            if datas is None:
                raise PlumberError("plunge(): no inputs; call set_inputs([iterables]) first")
            self.start(datas)
            self.run()

    def chinkup(self) -> None:
        """Stop gracefully: every item taken from an input reaches the outputs, then every
        thread and process is joined. Raises the failures of the run."""
        with self._calls:
            self._move("chinkup", _S.STOPPING)
            self._stop(forced=False)

    # -- in one call ------------------------------------------------------------------
    def collect(self, datas: Any) -> dict[Piper, list[Any]]:
        """Run the pipeline on ``datas`` to its end; ``{output Piper: [its items]}``.
        Raises the failures of the run (after the run is stopped)."""
        results: dict[Piper, list[Any]] = {}
        with self._calls:
            self.start(datas)
            run = self._run
            assert run is not None
            try:
                for piper, batch in run.read_outputs():
                    results.setdefault(piper, []).extend(batch)
            except BaseException:
                self._move("chinkup", _S.STOPPING)
                self._stop(forced=True)
                raise
            self._move("stop", _S.STOPPING)
            self._stop(forced=False)
        return {p: results.get(p, []) for p in self.get_outputs()}

    def stream(self, datas: Any, output: Piper | None = None) -> Iterator[Any]:
        """Run the pipeline on ``datas``, yielding the items of ``output`` (default: the
        only output Piper) as they come; the other outputs are read and discarded. Closing
        the iterator early stops the run at once (forced: items in flight are dropped)."""
        outputs = self.get_outputs()
        if output is None:
            if len(outputs) != 1:
                raise PlumberError(f"stream(): the pipeline has {len(outputs)} output Pipers "
                                   f"{[p.name for p in outputs]}; name one: stream(datas, "
                                   f"output=piper), or use collect(datas)")
            output = outputs[0]
        elif output not in outputs:
            raise PlumberError(f"stream(): {output!r} is not an output Piper of {self!r}")
        return self._stream(datas, output)

    def _stream(self, datas: Any, output: Piper) -> Iterator[Any]:
        self.start(datas)
        run = self._run
        assert run is not None
        ended = False
        try:
            run.plunge(skip=(output,))
            yield from output
            ended = True
        finally:
            with self._calls:
                if self._state is not _S.IDLE:
                    self._set(_S.STOPPING)
                    self._stop(forced=not ended)

    # -- a context manager ------------------------------------------------------------
    def __enter__(self) -> "Plumber":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._calls:
            if self._state is _S.IDLE:
                return
            self._set(_S.STOPPING)
            if exc_type is None:
                self._stop(forced=False)
                return
            try:
                self._stop(forced=True)
            except BaseException as failure:  # noqa: BLE001 - the propagating one wins
                log.error("%r: the run also failed: %r", self, failure)

    # -- helpers ----------------------------------------------------------------------
    def _raise_failures(self) -> None:
        run = self._run
        if run is not None:
            raise_failures(run.context.take_failures(), repr(self))

    def save(self, filename: str) -> None:
        """Write the pipeline as a runnable Python module (see ``papy._save``)."""
        from ._save import save_pipeline
        save_pipeline(self, filename)

    def load(self, filename: str) -> None:
        """Add the Pipers and pipes of a module written by ``save`` (runs its code)."""
        from ._save import load_pipeline
        load_pipeline(self, filename)
