"""SIGINT and SIGTERM for a program running a Plumber: a clear message, a bounded stop.

Without help, a script that runs a Plumber and is sent SIGTERM dies at once, without a
word (the default action of SIGTERM; its process workers then die by PR_SET_PDEATHSIG), and
Ctrl-C prints a KeyboardInterrupt traceback from wherever the main thread was waiting.
``handle_signals(plumber)`` makes both a graceful, bounded stop; it is the one mechanism
for this in papy (``papy run`` and ``run_plumber`` use it too)::

    with papy.handle_signals(plumber):
        plumber.plunge()
        plumber.wait()          # Ctrl-C or SIGTERM here: message, chinkup(), exit 130/143

    main thread                               stopper thread (only after a signal)
    -----------                               -------------------------------------
    signal arrives -> handler raises Interrupted (once; later signals only force the stop)
    __exit__: message on stderr, log -------> plumber.chinkup() (items taken are finished)
    waits up to ``grace`` seconds
    not done: stops every IMap, forced        chinkup() returns (or raises: reported)
    (process workers killed), joins stopper
    raises SystemExit(130 for SIGINT, 143 for SIGTERM), or returns (``exit=False``)

A signal may arrive at any moment, while the pipeline starts included: whatever the
interrupted code raised on its way out (a half-started IMap cleaning up) is reported in one
line, and the exit is the signal's. Shutdown order after a signal: 1. the message;
2. ``chinkup()`` in the stopper thread; 3. after ``grace`` seconds, or at once on a second
signal, ``IMap.stop(forced=True)`` on every IMap of the Plumber, which ends the items in
flight; 4. the stopper is joined; 5. the handlers in place before are restored; 6. SystemExit.
Handlers can be installed only in the main thread; elsewhere this is a no-op (a warning).
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import IO, Any, Self

from imap import _config

log = logging.getLogger("papy")

__all__ = ["Interrupted", "handle_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while ``handle_signals`` was active; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class handle_signals:  # noqa: N801 - used like a function: ``with handle_signals(p):``
    """Stop ``plumber`` gracefully on SIGINT/SIGTERM, within ``grace`` seconds, then exit.

    On a signal: a message on ``stream`` (default stderr) and in the ``papy`` log, then
    ``plumber.chinkup()``; if that takes longer than ``grace`` seconds (items in flight
    that are slow, a full buffer; None: no limit), or a second signal comes, the IMaps are
    stopped with ``forced=True`` (process workers are killed; thread items are abandoned).
    Then ``SystemExit(130)`` (SIGINT) or ``SystemExit(143)`` (SIGTERM); with ``exit=False``
    the ``with`` block ends normally instead and ``signum`` tells which signal came (None:
    none). ``on_signal(signum)`` is called first (e.g. to stop a progress display). Other
    exceptions pass through.
    """

    def __init__(self, plumber: Any, grace: float | None = 1.5, stream: IO[str] | None = None,
                 exit: bool = True,  # noqa: A002 - the name says what it does
                 on_signal: Callable[[int], None] | None = None):
        self.plumber = plumber
        self.grace = _config.seconds("handle_signals(): grace", grace, default=None)
        self.stream = stream
        self.exit = exit
        self.on_signal = on_signal
        self.signum: int | None = None
        self._closing = False
        self._previous: dict[int, Any] = {}
        self._force = threading.Event()   # a second signal came
        self._wake = threading.Event()    # the stopper finished, or a second signal came

    def __enter__(self) -> Self:
        if threading.current_thread() is not threading.main_thread():
            warnings.warn("handle_signals(): not in the main thread, signals are not handled",
                          RuntimeWarning, stacklevel=2)
            return self
        for signum in _SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:     # a second signal during the stop: force it
            self._force.set()
            self._wake.set()
            return
        self.signum = signum
        if not self._closing:           # in __exit__ already: it sees signum
            raise Interrupted(signum)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self._closing = True
        try:
            if self.signum is None:
                return False
            if exc is not None and not isinstance(exc, Interrupted):
                # raised by the code the signal interrupted, on its way out (a half-started
                # pipeline cleaning up): a consequence of the signal, reported, not raised
                self._say(f"while stopping: {type(exc).__name__}: {exc}")
            self._stop(self.signum)
        finally:
            self._restore()
        if self.exit:
            raise SystemExit(128 + self.signum) from None
        return True

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _say(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        try:
            stream.write(f"papy: {text}\n")
            stream.flush()
        except (OSError, ValueError):
            pass
        log.warning("%s", text)

    def _stop(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.on_signal is not None:
            try:
                self.on_signal(signum)
            except Exception as exc:  # noqa: BLE001 - reported; the stop goes on
                self._say(f"while stopping: {type(exc).__name__}: {exc}")
        limit = "" if self.grace is None else f" within {self.grace:g} s, then stopped"
        self._say(f"{name} received: stopping the pipeline (the items already taken are "
                  f"finished{limit}; {name} again stops at once)")
        failures: list[BaseException] = []
        stopper = threading.Thread(target=self._chinkup, args=(failures,), daemon=True,
                                   name="papy-signal-stopper")
        stopper.start()
        if self._wait(stopper):
            for failure in failures:
                self._say(f"while stopping: {type(failure).__name__}: {failure}")
        else:   # what chinkup() raises now is a consequence of the forced stop
            self._say("the pipeline did not stop in time: stopping its pools (the items "
                      "in flight are lost)" if not self._force.is_set() else
                      f"{name} again: stopping its pools (the items in flight are lost)")
            self._force_stop()
            stopper.join()
        self._say(f"stopped by {name}")

    def _wait(self, stopper: threading.Thread) -> bool:
        """Wait for ``stopper`` up to ``grace`` seconds, or until a second signal comes."""
        self._wake.wait(self.grace)
        if self._force.is_set():
            return False
        stopper.join(0.5)   # it set _wake in its last statement; joining is immediate
        return not stopper.is_alive()

    def _chinkup(self, failures: list[BaseException]) -> None:
        try:
            self.plumber.chinkup()
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
        finally:
            self._wake.set()

    def _force_stop(self) -> None:
        imaps = {id(p.parallel): p.parallel for p in self.plumber.nodes()
                 if getattr(p, "parallel", False) is not False}
        for imap in imaps.values():
            try:
                imap.stop(forced=True)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                self._say(f"while stopping {imap!r}: {type(exc).__name__}: {exc}")
