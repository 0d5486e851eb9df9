"""Live progress and the final summary of a running Plumber.

    Piper threads, plunger  --write-->  PiperCounters (one per Piper, in plumber.stats["pipers"])
    progress thread         --read--->  those counters every `interval` seconds
    (_report_loop)          --write-->  the stream: a bar per output Piper (tqdm if installed,
                                        else a block of lines redrawn with ANSI escapes) on a
                                        terminal, a log line per output Piper otherwise
                                        (the views: papy._progress_views)
    owner (Plumber, papy run): start() ... stop()

The progress thread only reads counters (plain numbers, each written by one thread), so it
needs no lock and cannot slow the pipeline down. Figures that a Piper or IMap does not
provide yet (``time_waiting`` of a Piper, ``buffer_used``/``buffer_size`` of an IMap) are
shown when present and left out otherwise.

Shutdown order of ``stop()``: 1. set the stop event (the thread's timed wait returns at
once); 2. join the thread; 3. show the final figures once; 4. close the bars / end the line.

Example::

    progress = Progress(plumber, mode="log", interval=5).start()
    ...                                   # plumber.run(); plumber.wait()
    progress.stop()
    print(summary(plumber))
"""
from __future__ import annotations

import logging
import math
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ._cache_run import summary_lines
from ._progress_views import make_view

if TYPE_CHECKING:
    from types import TracebackType

    from ._piper import Piper
    from ._plumber import Plumber
    from ._progress_views import View

log = logging.getLogger(__name__)

__all__ = ["Progress", "PiperFigures", "figures", "summary", "expected_totals",
           "count_errors", "MODES", "SUMMARY_SECTIONS"]

MODES = ("auto", "bar", "log", "off")
BAR_INTERVAL = 0.2      # seconds between redraws of a bar
LOG_INTERVAL = 10.0     # seconds between log lines


@dataclass(frozen=True)
class PiperFigures:
    """What is known about one Piper at one moment (``None``: not provided)."""

    name: str
    items_in: int
    items_out: int
    errors: int
    time_busy: float
    time_waiting: float | None = None
    buffer_used: int | None = None
    buffer_size: int | None = None
    failed: int = 0         # items that failed at this Piper (not those failed upstream)


class _Zero:
    items_in = items_out = errors = 0
    time_busy = 0.0


_ZERO = _Zero()


def figures(plumber: Plumber, pipers: Iterable[Piper] | None = None) -> list[PiperFigures]:
    """The counters of ``pipers`` (default: every Piper of the last run, in postorder); a
    Piper given in ``pipers`` that has no counters yet shows zeros."""
    counters = (plumber.stats or {}).get("pipers") or {}
    chosen = list(counters) if pipers is None else list(pipers)
    failed_items = (plumber.stats or {}).get("failed_items")
    failed = failed_items.by_piper() if failed_items is not None else {}
    result = []
    for piper in chosen:
        c = counters.get(piper) or _ZERO
        imap = getattr(piper, "parallel", False)
        result.append(PiperFigures(
            name=piper.name, items_in=c.items_in, items_out=c.items_out, errors=c.errors,
            time_busy=c.time_busy, time_waiting=getattr(c, "time_waiting", None),
            buffer_used=getattr(imap, "buffer_used", None) if imap is not False else None,
            buffer_size=getattr(imap, "buffer_size", None) if imap is not False else None,
            failed=failed.get(id(piper), 0)))
    return result


def count_errors(plumber: Plumber) -> int:
    """Error items counted by all Pipers of the last run (an item that failed upstream is
    counted again by each Piper it passes)."""
    return sum(f.errors for f in figures(plumber))


def _elapsed(plumber: Plumber) -> float:
    stats = plumber.stats or {}
    if stats.get("run_time") is not None:
        return float(stats["run_time"])
    if stats.get("start_time") is not None:
        start: float = stats["start_time"]
        return max(0.0, time.time() - start)
    return 0.0


def summary(plumber: Plumber, title: str = "papy run") -> str:
    """A table of the last run: items in and out, items that failed at the Piper, error
    items it gave out (its own and those it passed on), busy and waiting seconds and
    throughput per Piper (upstream first), then the totals and the run time; then the
    lines of each of ``SUMMARY_SECTIONS``."""
    rows = figures(plumber)
    elapsed = _elapsed(plumber)
    inputs = {id(p) for p in _safe(plumber.get_inputs)}
    counters = (plumber.stats or {}).get("pipers") or {}
    width = max([len("piper")] + [len(r.name) for r in rows])
    lines = [f"{title}: {len(rows)} pipers, run time {elapsed:.2f} s",
             f"  {'piper':<{width}} {'in':>9} {'out':>9} {'failed':>7} {'errors':>7} "
             f"{'busy s':>8} {'wait s':>8} {'out/s':>10}"]
    for r in rows:
        rate = r.items_out / elapsed if elapsed > 0 else math.nan
        waited = f"{r.time_waiting:>8.2f}" if r.time_waiting is not None else f"{'-':>8}"
        lines.append(f"  {r.name:<{width}} {r.items_in:>9} {r.items_out:>9} {r.failed:>7} "
                     f"{r.errors:>7} {r.time_busy:>8.2f} {waited} {rate:>10.1f}")
    taken = sum(c.items_in for p, c in counters.items() if id(p) in inputs)
    errors = sum(r.errors for r in rows)
    failed = sum(r.failed for r in rows)
    lines.append(f"  items: {taken} taken from the inputs; failed: {failed}; error items: "
                 f"{errors}; run time: {elapsed:.2f} s")
    for section in SUMMARY_SECTIONS:
        lines += section(plumber)
    return "\n".join(lines)


def _output_closed(plumber: Plumber) -> list[str]:
    failed = (plumber.stats or {}).get("failed_items")
    if failed is None or failed.output_closed is None:
        return []
    return [f"  the output was closed (a broken pipe at piper {failed.output_closed!r}): "
            f"the run stopped early"]


#: functions ``(plumber) -> [lines]`` whose lines end the summary, in order (a feature that
#: has figures of its own appends one; an empty list adds nothing)
SUMMARY_SECTIONS: list[Callable[[Plumber], list[str]]] = [
    _output_closed, summary_lines]      # summary_lines: the cache's


def _safe(method: Callable[[], list[Piper]]) -> list[Piper]:
    try:
        return method()
    except Exception:  # noqa: BLE001 - a graph being edited: show what the stats have
        return []


def expected_totals(plumber: Plumber, datas: Sequence[Any]) -> dict[Piper, int]:
    """Items each Piper will give out, when every input in ``datas`` has a length:
    ``{piper: n}`` (a Piper whose count cannot be known is left out).

    An input Piper gives ``ceil(len / consume) x produce`` items; a Piper downstream does the
    same with what its upstream Pipers give (the shortest, for a join).
    """
    inputs = _safe(plumber.get_inputs)
    if len(inputs) != len(datas) or not all(hasattr(d, "__len__") for d in datas):
        return {}
    made: dict[Piper, int] = {}
    for piper in _safe(plumber.postorder):
        if piper in inputs:
            taken = len(datas[inputs.index(piper)])
        else:
            ups = [made.get(u) for u in plumber.get_upstream(piper)]
            known = [u for u in ups if u is not None]
            if not ups or len(known) < len(ups):
                continue
            taken = min(known)
        made[piper] = int(math.ceil(Fraction(taken, piper.consume)) * piper.produce)
    return made


class Progress:
    """Shows the progress of a running Plumber until ``stop()``.

    ``Progress(plumber, mode='auto', stream=None, interval=None, totals=None)``

    - ``mode``: ``'bar'`` (a bar per output Piper: tqdm if installed, else a simple bar per
      output redrawn in place), ``'log'`` (a line per output Piper every ``interval``
      seconds), ``'auto'`` (bar on a terminal, log otherwise), ``'off'``.
    - ``stream``: where to write (default ``sys.stderr``).
    - ``interval``: seconds between updates (default 0.2 for bars, 10 for log lines).
    - ``totals``: ``{piper: items expected}`` for the bars (see ``expected_totals``).

    Reads ``plumber.stats['pipers']``, which ``Plumber.start`` fills, so it may be made
    before ``start``; the output Pipers are looked up at ``start()``. Never raises from its
    thread: an error there stops the display, is logged and kept in ``error``.
    """

    def __init__(self, plumber: Plumber, mode: str = "auto", stream: IO[str] | None = None,
                 interval: float | None = None, totals: dict[Piper, int] | None = None):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not {mode!r}")
        if interval is not None and (not isinstance(interval, (int, float)) or interval <= 0):
            raise ValueError(f"progress interval must be seconds > 0, not {interval!r}")
        self.plumber = plumber
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "bar" if _is_terminal(self.stream) else "log"
        self.mode = mode
        self.interval = interval or (BAR_INTERVAL if mode == "bar" else LOG_INTERVAL)
        self.totals = dict(totals or {})
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._view: View | None = None
        self._lock = threading.Lock()       # start/stop from different threads

    def start(self) -> "Progress":
        """Start the display thread (a no-op with mode 'off' or when already started)."""
        with self._lock:
            if self.mode == "off" or self._thread is not None:
                return self
            outputs = _safe(self.plumber.get_outputs)
            self._view = make_view(self.mode, self.stream, outputs, self.totals)
            self._stop.clear()
            self._thread = threading.Thread(target=self._report_loop, daemon=True,
                                            name=f"papy-progress-{id(self.plumber)}")
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, show the final figures, close the display. Idempotent."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stop.set()
            thread.join()
            view, self._view = self._view, None
        assert view is not None     # made by start() with the thread
        if self.error is None:
            try:
                view.update(self._current(view), final=True)
            except Exception as exc:  # noqa: BLE001 - kept for the owner, see class doc
                self._record(exc)
        try:
            view.close()
        except Exception as exc:  # noqa: BLE001
            self._record(exc)

    def __enter__(self) -> "Progress":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def _report_loop(self) -> None:
        view = self._view
        assert view is not None     # made by start() before the thread
        try:
            while not self._stop.wait(self.interval):
                view.update(self._current(view), final=False)
        except Exception as exc:  # noqa: BLE001 - kept for the owner, see class doc
            self._record(exc)

    def _record(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        log.error("progress display of %r failed: %s: %s", self.plumber, type(exc).__name__,
                  exc)

    def _current(self, view: View) -> tuple[list[PiperFigures], float]:
        return figures(self.plumber, view.pipers), _elapsed(self.plumber)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
