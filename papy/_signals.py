"""SIGINT and SIGTERM for a script running a Plumber: a clear message, a bounded stop.

Without help, a script that runs a Plumber and is sent SIGTERM dies at once, without a
word (the default action of SIGTERM; its process workers then die by PR_SET_PDEATHSIG), and
Ctrl-C prints a KeyboardInterrupt traceback from wherever the main thread was waiting.
``handle_signals(plumber)`` makes both a graceful, bounded stop::

    with papy.handle_signals(plumber):
        plumber.plunge()
        plumber.wait()          # Ctrl-C or SIGTERM here: message, chinkup(), exit 130/143

    main thread                               stopper thread (only after a signal)
    -----------                               -------------------------------------
    signal arrives -> handler raises Interrupted
    __exit__: message on stderr, log -------> plumber.chinkup() (items taken are finished)
    waits up to ``grace`` seconds
    not done: stops every IMap, forced        chinkup() returns (or raises: reported)
    (process workers killed), joins stopper
    raises SystemExit(130 for SIGINT, 143 for SIGTERM)

Shutdown order after a signal: 1. the message; 2. ``chinkup()`` in the stopper thread;
3. after ``grace`` seconds, ``IMap.stop(forced=True)`` on every IMap of the Plumber, which
ends the items in flight; 4. the stopper is joined; 5. the handlers in place before are
restored; 6. SystemExit. A second signal during the stop goes straight to step 3.
Handlers can be installed only in the main thread; elsewhere this is a no-op (logged).
"""
from __future__ import annotations

import logging
import signal
import sys
import threading

log = logging.getLogger("papy")

__all__ = ["handle_signals", "Interrupted"]

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
    that are slow, a full buffer), the IMaps are stopped with ``forced=True`` (process
    workers are killed; thread items are abandoned). Then ``SystemExit(130)`` (SIGINT) or
    ``SystemExit(143)`` (SIGTERM), as ``papy run`` does. Other exceptions pass through.
    """

    def __init__(self, plumber, grace: float = 1.5, stream=None):
        if grace < 0:
            raise ValueError(f"handle_signals(): grace must be >= 0 seconds, not {grace!r}")
        self.plumber = plumber
        self.grace = grace
        self.stream = stream
        self._previous: dict[int, object] = {}
        self._stopping = threading.Event()
        self._force = threading.Event()   # a second signal came
        self._wake = threading.Event()    # the stopper finished, or a second signal came

    def __enter__(self) -> "handle_signals":
        if threading.current_thread() is not threading.main_thread():
            log.warning("handle_signals(): not in the main thread, signals are not handled")
            return self
        for signum in _SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def _on_signal(self, signum, frame):
        if self._stopping.is_set():     # a second signal during the stop: force it
            self._force.set()
            self._wake.set()
            return
        raise Interrupted(signum)

    def __exit__(self, exc_type, exc, tb):
        try:
            if not isinstance(exc, Interrupted):
                return False
            self._stopping.set()
            self._stop(exc.signum)
        finally:
            self._restore()
        raise SystemExit(128 + exc.signum) from None

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
        self._say(f"{name} received: stopping the pipeline (the items already taken are "
                  f"finished within {self.grace:g} s, then stopped; {name} again stops at once)")
        failures: list[BaseException] = []
        stopper = threading.Thread(target=self._chinkup, args=(failures,), daemon=True,
                                   name="papy-signal-stopper")
        stopper.start()
        if self._wait(stopper):
            for failure in failures:
                self._say(f"while stopping: {type(failure).__name__}: {failure}")
        else:   # what chinkup() raises now is a consequence of the forced stop
            self._say("the pipeline did not stop in time: stopping its pools (the items "
                      "in flight are lost)")
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

    def _chinkup(self, failures: list) -> None:
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
                log.warning("handle_signals(): stopping %r raised %r", imap, exc)
