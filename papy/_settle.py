"""Settling: what the parent does to a batch of results as they leave a node's Worker.

    results of a node (values + errors in place, from an IMap task or a linear call)
        |  an error in place (a timeout, a worker lost, a result that could not be pickled,
        |  a BaseException raised by the function): PiperError(exc), logged
        |  Busy: the seconds the Worker was busy (per stage when fused), unwrapped
        |  WorkerError -> PiperError (logged); StagesFailed -> passed on through the stages
        |  counted (errors; a fused node's items) and tracked ({index: result})
        |  an error item made here for an item that failed here (not one carrying an
        |  upstream failure) is recorded (papy._failures: the failed items of the run)
        |  Multiple: its elements settled in place (the node fans it out: papy._fanout)
        v
    a list of results, the same length, in place

Plain results (``PLAIN`` types) of a node that tracks nothing are left as they are: one
C-level scan of their types checks a whole batch.
"""
from __future__ import annotations

import itertools
import logging
from itertools import compress
from operator import not_
from typing import TYPE_CHECKING, Any, cast

from imap import BrokenPoolError

from ._cache_run import Counted, count_carried, count_lost, count_skipped
from ._errors import PapyError, PiperError, WorkerError
from ._fanout import Multiple
from ._fuse import StagesFailed
from ._timed import Busy
from ._worker import NEVER_SUSPECT

if TYPE_CHECKING:
    from ._nodes import Node
    from ._piper import Piper

log = logging.getLogger(__name__)

__all__ = ["settle", "PLAIN", "error_item", "stages_failed", "read_error"]

# exact types that are never a Busy nor a PapyError: settling skips its tests for them
PLAIN = NEVER_SUSPECT | {list}


def settle(node: Node, values: list[Any], errors: dict[int, BaseException] | None
           ) -> list[Any]:
    """Settle one batch of ``node``'s results in place (see the module docstring)."""
    piper = node.piper
    if errors:
        for position, exc in errors.items():
            if isinstance(exc, BrokenPoolError) and not node.broken:
                # not about one item: a failure of the run (which ends its inputs); the
                # items still in the pool each get an error in place, logged once
                node.broken = True
                node.context.fail(exc, f"the pool of piper {piper.name!r} is broken")
            values[position] = read_error(exc, piper, quiet=node.broken)
        if node.cache_counts:
            count_lost(node, len(errors))
    if not PLAIN.issuperset(map(type, values)):
        odd = compress(itertools.count(), map(not_, map(PLAIN.__contains__, map(type, values))))
        for position in list(odd):
            values[position] = _convert(node, values[position], node.settled + position)
    if node.fused:
        node.counters.items_in += len(values)     # what left the fused chain
    tracked = node.tracked
    if tracked is not None:
        index = node.settled
        for offset, value in enumerate(values):
            tracked[index + offset] = value
    node.settled += len(values)
    return values


def _convert(node: Node, result: Any, index: int) -> Any:
    """A result that is not PLAIN: its Busy time added up, an error item made."""
    if type(result) is Counted:         # a cached Worker's record (papy._cache_run)
        result = count_carried(node, result)
    if type(result) is Busy:
        if node.fused:      # a FusedCall's: seconds per stage
            stages = cast("tuple[float, ...]", result.seconds)
            for piper, seconds in zip(node.pipers, stages, strict=True):
                node.counters_of(piper).time_busy += seconds
        else:
            node.counters.time_busy += cast(float, result.seconds)
        result = result.value
        if type(result) is Counted:
            result = count_carried(node, result)
    if type(result) is StagesFailed:
        return stages_failed(node, result.errors, index)
    if isinstance(result, PapyError):
        return error_item(node, node.piper, result, index)
    if type(result) is Multiple:      # several items: each settled, fanned out by the node
        node.fanned = True
        result.items = [x if type(x) in PLAIN else _convert(node, x, index)
                        for x in result.items]
    return result


def error_item(node: Node, piper: Piper, error: PapyError, index: int | None = None
               ) -> PapyError:
    """The error item ``piper`` gives for ``error`` (a WorkerError is logged and wrapped in
    a PiperError) as its result number ``index``; counts it, and records it when the item
    failed here."""
    if isinstance(error, WorkerError):
        log.error("piper %r: %s", piper.name, error)
        log.debug("piper %r: traceback:\n%s", piper.name, error.traceback_text)
        error = PiperError(error)
    node.counters_of(piper).errors += 1
    if type(error) is PiperError:
        node.context.failed_items.record(piper, index, error)
    return error


def stages_failed(node: Node, errors: dict[int, PapyError], index: int | None = None
                  ) -> PapyError:
    """Fused: some stages of the node's group gave ``errors`` (``{stage: error}``); every
    stage that reads a failed one passes the error items it reads on as its Worker would
    have (``PiperError(*those)``), each counting an error; the exit's error item is the
    result."""
    made: dict[int, PapyError] = {}
    for stage, piper in enumerate(node.pipers):
        if stage in errors:
            made[stage] = error_item(node, piper, errors[stage], index)
            continue
        read = [made[k] for k in node.stage_inputs[stage] if k in made]
        if read:
            made[stage] = error_item(node, piper, PiperError(*read))
            count_skipped(node, piper)
    return made[len(node.pipers) - 1]


def read_error(exc: BaseException, piper: Piper, quiet: bool = False) -> PiperError:
    """The error item that takes the place of a result the pool could not give (logged,
    unless ``quiet``). Fused: which stage the item was in is not known; it is the group's
    exit's."""
    if quiet:
        pass
    elif isinstance(exc, TimeoutError):
        log.warning("piper %r: an item ran longer than its timeout of %ss; a PiperError "
                    "takes its place", piper.name, piper.timeout)
    else:
        log.error("piper %r: %s: %s", piper.name, type(exc).__name__, exc)
    return PiperError(exc)
