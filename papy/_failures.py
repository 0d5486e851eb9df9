"""Failed items of a run: counted where they first failed, shown to the user.

    scheduler thread: settle() makes an error item ------ record(origin) -----> FailedItems
        (only where an item *first* fails: a WorkerError, a timeout, a worker that died;
        the error items that merely carry an upstream one are not recorded)
                                                          |  groups: (Piper, exception type)
                                                          |    -> count, first error item
                                                          |  positions: which items failed
        fail_fast: the first one is a failure of the run and StopRun ends the scheduler
        verbose: one line per failed item on the stream, as it happens
        a BrokenPipeError while stdout's reader is gone: the output was closed (``| head``):
            nothing is counted, StopRun ends the scheduler, the run ends without a failure
    owner (Plumber._stop, papy.run_plumber) --report()--> the text on stderr

How failed *input items* are counted, not the echoes of one failure: an error item travels
downstream as a value, and every Piper it passes wraps it (``PiperError(upstream)``), so
each Piper's ``errors`` counter counts it again. Only the error item made where the item
first failed (its *origin*: a PiperError that holds no other PiperError) is recorded here,
with the Piper and the item's position among that Piper's results. Where every Piper from
the inputs to that Piper maps items one to one (``consume == produce == 1``, ordered pools),
that position is the input item's index, so failures of one input item in two branches of a
join count once; elsewhere each origin counts as one item (``FailedItems.count``).

Writes and reads: ``record`` runs in the scheduler thread only; ``groups``/``count``/
``report`` may be called from any thread (a lock guards the tables).
"""
from __future__ import annotations

import os
import select
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from imap import IMapError, RemoteTraceback, SerializationError

from ._errors import PiperError, WorkerError, _short_repr

if TYPE_CHECKING:
    from ._piper import Piper
    from ._runtime import RunContext

__all__ = ["FailedItems", "FailureGroup", "StopRun", "stdout_closed", "failure_report",
           "report_of", "one_to_one", "silence_stdout"]

#: groups shown in a report (the others are summed up in one line)
MAX_GROUPS = 10
#: positions kept per Piper to count distinct input items (beyond: each counts as one)
MAX_POSITIONS = 1_000_000
HELP = ("an error item tells its cause: err.root_cause, err.traceback_text, err.explain(); "
        "see docs/troubleshooting.md")


class StopRun(Exception):  # noqa: N818 - a signal to the run, not an error of its own
    """Raised in the scheduler thread to end the run at once (papy._run aborts its nodes);
    ``reason`` is what a hand reader of an output then raises."""

    def __init__(self, reason: BaseException):
        super().__init__(reason)
        self.reason = reason


@dataclass
class FailureGroup:
    """The items that failed at one Piper with one exception type."""

    piper: Piper
    kind: str                   # the type name of the root cause
    count: int
    first: PiperError           # the first such error item (its origin)


def stdout_closed() -> bool:
    """Is file descriptor 1 a pipe whose reader is gone (``papy run ... | head`` ended)?"""
    try:
        poller = select.poll()
        poller.register(1, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):     # no poll() here, or no fd 1
        return False


class FailedItems:
    """The failed items of one run (see the module docstring)."""

    def __init__(self, context: RunContext):
        self.context = context
        self.fail_fast = False
        self.verbose = False
        self.stream: IO[str] | None = None        # for verbose lines (default stderr)
        self.output_closed: str | None = None     # the Piper that met the closed stdout
        self._lock = threading.Lock()
        self._groups: dict[tuple[int, str], FailureGroup] = {}
        self._positions: dict[int, set[int]] = {}
        self._pipers: dict[int, Piper] = {}
        self._unplaced = 0          # origins without a known position

    def configure(self, fail_fast: bool = False, verbose: bool = False,
                  stream: IO[str] | None = None) -> None:
        """Set before the run starts (by the Plumber, from its options)."""
        self.fail_fast, self.verbose, self.stream = bool(fail_fast), bool(verbose), stream

    # -- the scheduler thread ----------------------------------------------------------
    def record(self, piper: Piper, index: int | None, error: PiperError) -> None:
        """``error`` was just made by ``piper`` for its result number ``index``: if it is
        an origin (no upstream error item inside), record it (module docstring)."""
        if any(isinstance(arg, PiperError) for arg in error.args):
            return                  # it carries an upstream failure: counted there
        cause = error.root_cause
        if isinstance(cause, BrokenPipeError) and stdout_closed():
            self._output_closed(piper)
            return
        error._piper_name, error._index = piper.name, index
        if not isinstance(error.args[0] if error.args else None, WorkerError):
            error._worker_traceback = _traceback_of(cause)
        with self._lock:
            key = (id(piper), type(cause).__name__)
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = FailureGroup(piper, key[1], 0, error)
            group.count += 1
            self._pipers[id(piper)] = piper
            positions = self._positions.setdefault(id(piper), set())
            if index is None or len(positions) >= MAX_POSITIONS:
                self._unplaced += 1
            else:
                positions.add(index)
        if self.verbose:
            self._say(error, first=group.count == 1)
        if self.fail_fast:
            self._stop_fast(error)

    def _output_closed(self, piper: Piper) -> None:
        if self.output_closed is None:
            self.output_closed = piper.name
            reason = PiperError(f"the output was closed (a broken pipe at piper "
                                f"{piper.name!r}): the run stopped early")
            self.context.request_stop()
            raise StopRun(reason)

    def _stop_fast(self, error: PiperError) -> None:
        failure = PiperError(error)
        failure.add_note(f"papy: fail_fast: piper {error.piper_name!r} failed on an item; "
                         f"the run was stopped")
        if error.traceback_text:
            failure.add_note("worker traceback:\n" + _indent(error.traceback_text, 2))
        self.context.fail(failure)
        raise StopRun(failure)

    def _say(self, error: PiperError, first: bool) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        lines = error.explain().splitlines() or [""]
        text = "papy: " + lines[0]
        if first and len(lines) > 1:
            text += "\n" + _indent("\n".join(lines[1:]), 4)
        try:
            stream.write(text.rstrip("\n") + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass            # a closed stderr must not stop the run

    # -- any thread ---------------------------------------------------------------------
    @property
    def groups(self) -> list[FailureGroup]:
        """The groups in the order they first failed."""
        with self._lock:
            return list(self._groups.values())

    @property
    def origins(self) -> int:
        """Items that failed, counted where each failed (an input item that failed in two
        branches of a join counts twice here)."""
        with self._lock:
            return sum(group.count for group in self._groups.values())

    def count(self, one_to_one: Callable[[Piper], bool] | None = None) -> int:
        """Failed input items: positions at Pipers that ``one_to_one`` says map input items
        one to one are input indexes (counted once over those Pipers); every other origin
        counts as one item. Without ``one_to_one``, every origin counts."""
        with self._lock:
            if one_to_one is None:
                return sum(group.count for group in self._groups.values())
            inputs: set[int] = set()
            others = self._unplaced
            for key, positions in self._positions.items():
                if one_to_one(self._pipers[key]):
                    inputs |= positions
                else:
                    others += len(positions)
            return len(inputs) + others

    def by_piper(self) -> dict[int, int]:
        """``{id(piper): items that failed there}``."""
        with self._lock:
            counts: dict[int, int] = {}
            for (key, _), group in self._groups.items():
                counts[key] = counts.get(key, 0) + group.count
            return counts

    def __bool__(self) -> bool:
        return bool(self._groups)


def failure_report(failed: FailedItems, one_to_one: Callable[[Piper], bool] | None = None,
                   taken: int | None = None, error_items: int | None = None) -> str:
    """The text shown when a run ends with failed items ('' when none failed): how many,
    then per Piper and exception type the count and the first item with its traceback."""
    groups = failed.groups
    if not groups:
        return ""
    count = failed.count(one_to_one)
    noun = "input item" if one_to_one is not None else "item"
    head = f"papy: {count} {noun}{'s' if count != 1 else ''} failed"
    if taken is not None:
        head += f" (of {taken} taken from the inputs)"
    if error_items is not None and error_items > failed.origins:
        head += (f"; the Pipers downstream passed them on as {error_items} error items in "
                 f"all")
    lines = [head]
    for group in groups[:MAX_GROUPS]:
        lines += _group_lines(group)
    if len(groups) > MAX_GROUPS:
        rest = groups[MAX_GROUPS:]
        lines.append(f"  ... and {sum(g.count for g in rest)} items in {len(rest)} more "
                     f"groups")
    lines.append(f"  ({HELP})")
    return "\n".join(lines)


def _group_lines(group: FailureGroup) -> list[str]:
    first = group.first
    where = f"item {first.index}" if first.index is not None else "an item"
    inbox = first.item
    on = f", inbox {_short_repr(inbox)}" if inbox is not None else ""
    plural = "s" if group.count != 1 else ""
    lines = [f"  piper {group.piper.name!r}: {group.kind}: {group.count} item{plural}; "
             f"the first, {where}{on}:"]
    trace = first.traceback_text.rstrip("\n")
    if isinstance(first.origins[0].args[0] if first.origins[0].args else None, WorkerError):
        lines.append(_indent(trace, 4))         # the function's traceback, message last
        return lines
    cause = first.root_cause                     # the pool's error: its message first
    lines.append(f"    {type(cause).__name__}: {cause}")
    if trace:
        lines += ["    raised at:", _indent(trace, 6)]
    return lines


def _traceback_of(exc: BaseException) -> str:
    """The worker-side traceback imap attached (``__cause__``), or this one's, or '' for
    imap's own errors (a timeout, a worker that died, an item that could not be pickled:
    their message says it all, their traceback is imap's)."""
    cause = exc.__cause__
    if isinstance(cause, RemoteTraceback) and not isinstance(exc, SerializationError):
        return cause.tb.strip('\n"')       # e.g. a RemoteError: the function's exception
    if isinstance(exc, IMapError):
        return ""
    if exc.__traceback__ is not None:
        return "".join(traceback.format_exception(exc))
    return ""


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line for line in text.splitlines())


def report_of(plumber: Any) -> str:
    """The failure report of a Plumber's last run ('' when no item failed)."""
    stats = plumber.stats or {}
    failed = stats.get("failed_items")
    if not failed:
        return ""
    counters = stats.get("pipers") or {}
    try:
        inputs = plumber.get_inputs()
        taken = counters[inputs[0]].items_in if len(inputs) == 1 and inputs[0] in counters \
            else None
    except Exception:  # noqa: BLE001 - a graph being edited: say less
        taken = None
    errors = sum(c.errors for c in counters.values())
    return failure_report(failed, lambda piper: one_to_one(plumber, piper), taken, errors)


def one_to_one(dagger: Any, piper: Piper) -> bool:
    """Does the n-th result of ``piper`` come from the n-th item of the inputs? Every Piper
    from the inputs to it (itself included) has ``consume == produce == 1`` and is linear or
    on an ordered pool."""
    seen: set[int] = set()
    stack = [piper]
    try:
        while stack:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            pool = current.parallel
            if current.consume != 1 or current.produce != 1 or (
                    pool is not False and not getattr(pool, "ordered", True)):
                return False
            stack.extend(dagger.get_upstream(current))
    except Exception:  # noqa: BLE001 - not in the graph (any more): positions stay apart
        return False
    return True


def silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null once its reader is gone, so that the flush of
    ``sys.stdout`` at exit does not fail (the way Python's docs handle SIGPIPE)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(null, 1)
    except OSError:
        pass
    finally:
        os.close(null)
