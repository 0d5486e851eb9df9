"""The state one run of a pipeline shares: the input gate and the failure sink.

    user iterables --> Feed (one per input Piper) --> Pipers ... --> outputs --> plunger/user
                        |  next() checks the gate                       |
                        |  and publishes the stop event to the input     |
                        v                                                v
                      RunContext  <---- fail(exc) from any thread ---- (join mismatch, input
                        gate: stopping, limit                           error, debug raise,
                        failures: [exc, ...]                            plunger error)

Stopping is *graceful*: ``request_stop()`` closes the gate, every Feed ends its input at the
next pull, the items already taken drain through the pipeline, the outputs end. When several
inputs are joined downstream they must end at the same position, so the gate records the
largest number of items any input has taken (``limit``) and the others may catch up to it.

An input blocked inside ``next()`` (a ``tail -f`` reader waiting for data) cannot see a flag
it does not check: the Feed publishes the run's stop event in a context variable while it
calls the input, and ``papy.workers.io.load_file`` waits on that event instead of sleeping.
``current_stop_event()`` is the hook for user generators that want to do the same.

A failure (``fail(exc)``) is recorded, logged and closes the gate: the first failure stops the
inputs, the pipeline drains and ``Plumber.wait()`` / ``chinkup()`` raise what was collected.
"""
from __future__ import annotations

import contextvars
import itertools
import logging
import operator
import threading
from typing import Any, Callable, Iterable

from ._failures import FailedItems

log = logging.getLogger("papy")  # one name for the whole package (and "imap")

__all__ = ["RunContext", "Feed", "current_stop_event"]

_MAX_FAILURES = 100
_CURRENT_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "papy_stop_event", default=None)


def current_stop_event() -> threading.Event | None:
    """The stop event of the pipeline that is pulling the calling input, or None.

    Inside an input iterable that a Plumber reads (e.g. a generator given to ``start`` or
    ``set_inputs``), this returns an Event that is set when the Plumber stops. A generator
    that waits for data can ``event.wait(seconds)`` instead of ``time.sleep(seconds)`` and
    return when it is set, so that ``chinkup()`` does not wait for the next item.
    """
    return _CURRENT_STOP.get()


class RunContext:
    """Gate for the inputs and sink for the failures of one pipeline run."""

    def __init__(self, name: str = "pipeline", standalone: bool = False):
        self.name = name
        self.standalone = standalone    # True: Pipers used without a Plumber raise failures
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._limit: int | None = None      # set when stopping
        self._feeds: list[Feed] = []
        self._failures: list[BaseException] = []
        self._dropped = 0
        self.failed_items = FailedItems(self)     # the items that failed (papy._failures)

    # -- the gate ---------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def request_stop(self) -> None:
        """Close the gate: every input ends at its next pull (joined inputs line up)."""
        with self._lock:
            if self._limit is None:
                self._limit = max((feed.taken for feed in self._feeds), default=0)
                log.debug("%s: stop requested, inputs end after %d items", self.name,
                          self._limit)
        self.stop_event.set()

    def _register(self, feed: "Feed") -> None:
        with self._lock:
            self._feeds.append(feed)

    # -- the failure sink -------------------------------------------------------------
    def fail(self, exc: BaseException, where: str = "") -> None:
        """Record a failure (logged, re-raised by the Plumber) and stop the inputs."""
        if where:
            try:
                exc.add_note(f"papy: {where}")
            except AttributeError:  # pragma: no cover - not an exception instance
                pass
        log.error("%s: %s%s: %s", self.name, where + ": " if where else "",
                  type(exc).__name__, exc, exc_info=exc)
        with self._lock:
            if len(self._failures) < _MAX_FAILURES:
                self._failures.append(exc)
            else:
                self._dropped += 1
        self.request_stop()

    @property
    def failed(self) -> bool:
        return bool(self._failures)

    def take_failures(self) -> list[BaseException]:
        """The failures recorded so far (each is handed out once)."""
        with self._lock:
            failures, self._failures = self._failures, []
            if self._dropped:
                log.error("%s: %d more failures were logged but not kept", self.name,
                          self._dropped)
                self._dropped = 0
        return failures


def raise_failures(failures: list[BaseException], what: str) -> None:
    """Raise one failure as itself, several as an ExceptionGroup."""
    if len(failures) == 1:
        raise failures[0]
    if failures:
        # mypy: a BaseException that is no Exception among several failures would make
        # ExceptionGroup raise TypeError (BaseExceptionGroup would take it): left as it is
        raise ExceptionGroup(f"{what}: {len(failures)} failures",
                             failures)  # type: ignore[type-var]  # Exceptions in practice


# in-memory iterators that never wait and never raise, whose length is known or infinite
_STEADY = {type(iter(kind())) for kind in (list, tuple)} | {
    type(iter(range(1))), type(iter(range(1 << 64))), itertools.count, itertools.repeat}


class Feed:
    """An input iterable behind the run's gate; counts the items it hands out.

    Ends (for good) when the input ends, when the gate is closed and this input has caught
    up with the others, or when the input raises (the exception is a failure of the run).
    """

    def __init__(self, iterable: Iterable[Any], context: RunContext, label: str = "input"):
        self._iterator = iter(iterable)
        self._context = context
        self._label = label
        self._done = False
        self.taken = 0          # items handed out, plus the one being pulled
        context._register(self)

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> Any:
        if not self._admit(1):      # reserved: a stop requested now waits for this item
            raise StopIteration
        context = self._context
        token = _CURRENT_STOP.set(context.stop_event)
        try:
            return next(self._iterator)
        except StopIteration:
            self._end()
            raise
        except Exception as exc:  # noqa: BLE001 - becomes a failure of the run
            self._end()
            context.fail(exc, f"{self._label} raised; it was ended")
            raise StopIteration from None
        finally:
            _CURRENT_STOP.reset(token)

    def gated(self) -> "Gated | None":
        """The items of a steady input (a list, tuple, range, count, repeat) behind the same
        gate as ``__next__``, read in bulk (``Gated.take``: the gate once per batch); None
        for any other input."""
        if type(self._iterator) not in _STEADY:
            return None
        left = operator.length_hint(self._iterator, -1)     # -1: infinite
        return Gated(self, left)

    def _admit(self, wanted: int) -> int:
        """How many of the next ``wanted`` items the gate lets through; reserves them
        (``taken``), so that a stop requested now lines the other inputs up with them."""
        context = self._context
        if len(context._feeds) == 1:    # the only input: no other input to line up with
            if self._done or context._limit is not None:
                self._done = True
                return 0
            self.taken += wanted
            return wanted
        with context._lock:
            if self._done or (context._limit is not None and self.taken >= context._limit):
                self._done = True
                return 0
            if context._limit is not None:
                wanted = min(wanted, context._limit - self.taken)
            self.taken += wanted
            return wanted

    def _taken(self, wanted: int, got: int, left: int) -> None:
        """``got`` of the ``wanted`` items reserved were there; ``left``: the input's length
        (-1: infinite). The last item ends the input at once, so that a stop requested now
        does not wait for another item of a join's other inputs."""
        if got < wanted or self.taken == left:
            self._end(wanted - got)

    def _end(self, unused: int = 1) -> None:
        """The input ended: give back the ``unused`` items reserved and not there."""
        context = self._context
        with context._lock:
            self.taken -= unused
            self._done = True
            if context._limit is not None:  # a stopped input ended early: don't wait for it
                context._limit = min(context._limit, self.taken)

    def __repr__(self) -> str:
        return f"Feed({self._label}, taken={self.taken})"


class Gated:
    """A steady input behind its Feed's gate (``Feed.gated``): an ``imap.BatchSource`` that
    never waits. ``take(count)`` asks the gate once for ``count`` items, copied in C."""

    __slots__ = ("_feed", "_iterator", "_left", "_ended")

    def __init__(self, feed: Feed, left: int):
        self._feed, self._iterator, self._left = feed, feed._iterator, left
        self._ended = left == 0

    def take(self, count: int) -> list[Any] | None:
        if self._ended:
            return None
        feed = self._feed
        allowed = feed._admit(count)
        items = list(itertools.islice(self._iterator, allowed)) if allowed else []
        feed._taken(allowed, len(items), self._left)
        if not items:
            self._ended = True
            return None
        return items

    def notify(self, wake: Callable[[], None]) -> None:
        """Never waits: nothing to notify."""

    def close(self) -> None:
        """Nothing to release."""
