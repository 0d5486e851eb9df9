"""Reading every output of a run: the plunger thread, ``collect()``, a graceful stop.

``RunOutputs`` is the part of ``papy._run.Run`` that reads the outputs (a mixin: the threads
of a run and its shutdown order are in papy._run)::

    Outlets of the output nodes --OutputReader.take_ready--> read_outputs(skip), read by
        plunger     (plunge .. pause, a thread of its own): discards the items
        collect()   (the caller's thread, papy._plumber): gathers the batches per output
        drain()     (a graceful stop without a plunger, in stop()): discards the items

``read_outputs`` reads every output at once (an output nobody reads would fill the run's
window and stop the others) and returns early when ``pause()`` asks (``_pausing``, set
under ``wakeup.cond``). ``outputs_ended`` is set once: when every output reader finished,
when the plunger failed, or when the run stopped; it then calls the Plumber's hook
``on_outputs_ended``.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from ._channels import Wakeup
    from ._outputs import OutputReader
    from ._piper import Piper
    from ._runtime import RunContext

__all__ = ["RunOutputs"]


class RunOutputs:
    """Reads every output of a Run (see the module docstring); owns the plunger thread,
    the pausing flag and the outputs-ended signal."""

    # set by Run.__init__
    name: str
    context: RunContext
    wakeup: Wakeup
    readers: dict[int, OutputReader]
    _pipers: dict[int, Piper]

    def __init__(self) -> None:
        # the plunger: reads every output, discarding, until paused or the outputs end
        self._plunger: threading.Thread | None = None
        self._pausing = False
        self.outputs_ended = threading.Event()
        self.on_outputs_ended: Callable[[], None] | None = None   # the Plumber's hook

    def _reader_ended(self) -> None:
        if all(reader.finished for reader in self.readers.values()):
            self._outputs_done()

    def _outputs_done(self) -> None:
        if not self.outputs_ended.is_set():
            self.outputs_ended.set()
            callback = self.on_outputs_ended
            if callback is not None:
                callback()

    def read_outputs(self, skip: tuple[Piper, ...] = ()) -> Iterator[tuple[Piper, list[Any]]]:
        """``(output Piper, batch)`` for every output but ``skip``, as batches become
        ready, until every one ended (reading all of them at once: an output nobody reads
        would fill the run's window and stop the others)."""
        cond = self.wakeup.cond
        skipped = {id(p) for p in skip}
        live = [(self._pipers[key], reader) for key, reader in self.readers.items()
                if key not in skipped]
        while live:
            with cond:
                cond.wait_for(lambda: self._pausing or any(
                    r.outlet.ready() or r.holds_unread()
                    for _, r in live))  # noqa: B023 - called within this iteration
                if self._pausing:
                    return
            for piper, reader in live:
                for batch in reader.take_ready():
                    yield piper, batch
            live = [(p, r) for p, r in live if not r.finished]

    def plunge(self, skip: tuple[Piper, ...] = ()) -> None:
        """Start (or go on) reading every output but ``skip`` in the background,
        discarding the items."""
        with self.wakeup.cond:
            self._pausing = False
            if self._plunger is not None and self._plunger.is_alive():
                return
        self._join_plunger()
        self._plunger = threading.Thread(target=self._plunge, args=(skip,), daemon=True,
                                         name=f"papy-plunger-{self.name}")
        self._plunger.start()

    def pause(self) -> None:
        """Stop the plunger at its next batch boundary; returns at once."""
        with self.wakeup.cond:
            self._pausing = True
            self.wakeup.cond.notify_all()

    def _plunge(self, skip: tuple[Piper, ...]) -> None:
        try:
            for _ in self.read_outputs(skip):
                pass
        except BaseException as exc:  # noqa: BLE001 - never lost: recorded for wait()
            self.context.fail(exc, "the plunger thread failed")
            self._outputs_done()

    def _join_plunger(self) -> None:
        plunger, self._plunger = self._plunger, None
        if plunger is not None and plunger is not threading.current_thread():
            plunger.join()

    def drain(self) -> None:
        """Read every output to its end here, discarding (a graceful stop without plunger)."""
        with self.wakeup.cond:
            self._pausing = False
        for _ in self.read_outputs():
            pass
