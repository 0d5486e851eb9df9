"""Run a Plumber to its end as a program does: ``papy.run_plumber`` and its options.

    run_plumber(plumber, datas)              (the caller's thread, the main thread for signals)
      handle_signals: Ctrl-C / SIGTERM -> graceful chinkup(), exit 130 / 143
      start -> Progress display -> run -> wait -> pause -> stop
      at the end, on ``stream`` (stderr): the summary table, then the failed items (by Piper
      and exception type, the first traceback of each), and the exit code

``papy run`` and the templates' ``main()`` use it; so can any script (``add_run_options``
gives an argparse parser the same options).

Exit codes (``EXIT_*``), also those of ``papy run``:

    0    done: every item went through (or the output was closed early: ``| head``)
    1    the pipeline failed: it could not start, an input raised, joined inputs had
         different lengths, a module raised (and for papy run: a bad pipeline module)
    2    usage error (papy run: bad options, a FILE that cannot be loaded, ...)
    3    the pipeline ran, but some items failed (``fail_fast``: it stopped at the first)
    130  stopped by Ctrl-C, after a graceful stop (143: by SIGTERM)
"""
from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterable
from typing import IO, Any

from ._failures import report_of, silence_stdout
from ._plumber import Plumber, PlumberState
from ._progress import MODES, Progress, expected_totals, summary
from ._signals import handle_signals

__all__ = ["run_plumber", "add_run_options", "run_options", "EXIT_OK", "EXIT_FAILED",
           "EXIT_USAGE", "EXIT_ITEMS_FAILED", "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ITEMS_FAILED = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


def add_run_options(parser: argparse.ArgumentParser,
                    progress: str = "auto") -> argparse.ArgumentParser:
    """Add ``--progress``, ``--interval``, ``--quiet``, ``--fail-fast`` and ``-v/--verbose``
    (read by ``run_options``).

    ``progress`` is the default mode: pipelines that print every item to the terminal
    choose ``'log'``, whose whole lines do not garble with theirs as a redrawn bar would."""
    group = parser.add_argument_group("running")
    group.add_argument("--progress", choices=MODES, default=progress,
                       help=f"live progress: a bar per output Piper (bar), periodic lines "
                            f"(log), bar on a terminal and log otherwise (auto), or none "
                            f"(off); default {progress}")
    group.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                       help="seconds between progress updates (default 0.2 for bars, 10 "
                            "for log lines)")
    group.add_argument("--quiet", action="store_true",
                       help="no progress and no summary (failed items are still reported)")
    group.add_argument("--fail-fast", action="store_true",
                       help="stop at the first item that fails and show its traceback "
                            f"(exit code {EXIT_ITEMS_FAILED})")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="show each failed item on stderr as it fails")
    return parser


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``run_plumber`` from options added by ``add_run_options``."""
    return {"progress": "off" if args.quiet else args.progress, "interval": args.interval,
            "show_summary": not args.quiet, "fail_fast": getattr(args, "fail_fast", False),
            "verbose": getattr(args, "verbose", False)}


def run_plumber(plumber: Plumber, datas: Any, progress: str = "auto",
                interval: float | None = None, show_summary: bool = True,
                stream: IO[str] | None = None, fail_fast: bool = False,
                verbose: bool = False) -> int:
    """Run ``plumber`` on ``datas`` (one iterable per input Piper) to the end; return an
    exit code (the module docstring's table).

    start, run, wait, pause, stop; meanwhile a ``Progress`` display (``progress`` mode) on
    ``stream`` (default stderr); at the end the summary (``show_summary``) and, whenever
    items failed, the report of the failed items. ``fail_fast`` stops at the first failed
    item (its traceback is shown); ``verbose`` shows each failed item as it fails (both
    also when the Plumber was made with them). Ctrl-C (or SIGTERM, in the main thread),
    at any moment, start-up included, stops gracefully with ``chinkup()`` through
    ``papy.handle_signals``: every item already taken from an input reaches the outputs;
    a second Ctrl-C abandons that. When stdout's reader goes away (``| head``), the run
    stops early and the exit code is 0, as for ``grep | head``.

    Example::

        >>> status = run_plumber(pipeline(), [range(100)], progress="off")
    """
    stream = stream if stream is not None else sys.stderr
    if isinstance(datas, Iterable) and not isinstance(datas, (str, bytes)):
        datas = list(datas)             # else start() says what it takes
    options = (plumber.fail_fast, plumber.verbose, plumber.report_failures)
    plumber.fail_fast, plumber.verbose = fail_fast or options[0], verbose or options[1]
    plumber.report_failures = False     # reported here, after the summary
    plumber._failure_stream = stream    # verbose lines too
    try:
        status, displays, fast = _run(plumber, datas, stream, progress, interval)
    finally:
        plumber.fail_fast, plumber.verbose, plumber.report_failures = options
        plumber._failure_stream = None
    if not displays:                    # it did not start (or a signal came while it did)
        return status
    if displays[0].error is not None:
        _write(stream, f"papy: warning: the progress display failed: {displays[0].error}")
    failed = plumber.stats.get("failed_items")
    if show_summary:
        _write(stream, summary(plumber))
    if failed is not None and failed.output_closed:
        silence_stdout()
    if fast is not None:
        _fail_fast_report(stream, fast)
    elif failed:
        _write(stream, report_of(plumber))
    if failed and status == EXIT_OK:
        status = EXIT_ITEMS_FAILED
    return status


def _run(plumber: Plumber, datas: Any, stream: IO[str], progress: str,
         interval: float | None) -> tuple[int, list[Progress], BaseException | None]:
    """(exit code, the progress display if it started, the failure fail fast raised)."""
    status = EXIT_OK
    displays: list[Progress] = []
    fast: list[BaseException] = []
    # the library's one signal-to-graceful-stop mechanism, with no time limit (a second
    # signal abandons the items in flight) and no exit: the summary is still printed
    def stop_displays(signum: int) -> None:
        for display in displays:
            display.stop()

    guard = handle_signals(plumber, grace=None, stream=stream, exit=False,
                           on_signal=stop_displays)
    with guard:
        try:
            plumber.start(datas)
        except Exception as exc:  # noqa: BLE001 - reported with its cause, exit code 1
            _report(stream, "the pipeline could not start", exc)
            status = EXIT_FAILED
        if status == EXIT_OK:
            status = _run_started(plumber, stream, datas, progress, interval, displays,
                                  fast)
    if guard.signum is not None:
        status = EXIT_TERMINATED if guard.signum == signal.SIGTERM else EXIT_INTERRUPTED
    return status, displays, fast[0] if fast else None


def _run_started(plumber: Plumber, stream: IO[str], datas: list[Any], progress: str,
                 interval: float | None, displays: list[Progress],
                 fast: list[BaseException]) -> int:
    """run, wait, pause, stop with a progress display; EXIT_OK, EXIT_FAILED, or
    EXIT_ITEMS_FAILED when fail fast stopped the run."""
    display = Progress(plumber, progress, stream, interval, expected_totals(plumber, datas))
    displays.append(display)
    try:
        display.start()
        plumber.run()
        plumber.wait()
        plumber.pause()
        plumber.stop()
    except Exception as exc:  # noqa: BLE001 - failures of the run: exit code 1
        display.stop()
        if plumber.fail_fast and plumber.stats.get("failed_items"):
            fast.append(exc)            # reported after the summary
            _shutdown(plumber, stream)
            return EXIT_ITEMS_FAILED
        _report(stream, "the pipeline failed", exc)
        _shutdown(plumber, stream)
        return EXIT_FAILED
    finally:
        display.stop()
    return EXIT_OK


def _fail_fast_report(stream: IO[str], exc: BaseException) -> None:
    """--fail-fast: the first failed item, where and why, with its traceback."""
    error = exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc
    explain = getattr(error, "explain", None)
    text = explain() if callable(explain) else f"{type(error).__name__}: {error}"
    lines = text.splitlines() or [""]
    _write(stream, "papy: stopped at the first failed item (fail fast): " + lines[0] +
           "".join("\n    " + line for line in lines[1:]))


def _shutdown(plumber: Plumber, stream: IO[str]) -> None:
    """Stop whatever is running after an error or an interrupt; report what that raised."""
    try:
        if plumber.state in (PlumberState.STARTED, PlumberState.RUNNING,
                             PlumberState.FINISHED, PlumberState.PAUSED):
            plumber.chinkup()
    except KeyboardInterrupt:
        _write(stream, "papy: interrupted again: stopped without finishing the items in "
                       "flight (the pools are stopped at exit)")
    except Exception as exc:  # noqa: BLE001 - the exit code already says it failed
        _report(stream, "the pipeline failed while stopping", exc)


def _report(stream: IO[str], what: str, exc: BaseException) -> None:
    lines = [f"papy: {what}: {type(exc).__name__}: {exc}"]
    lines += [f"  {note}" for note in getattr(exc, "__notes__", ())]
    if isinstance(exc, ExceptionGroup):
        lines += [f"  - {type(inner).__name__}: {inner}" for inner in exc.exceptions]
    _write(stream, "\n".join(lines))


def _write(stream: IO[str], text: str) -> None:
    try:
        stream.write(text.rstrip("\n") + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass                # stderr closed as well: the exit code still tells
