"""Settling: what the parent does to a batch of results as they leave a node's Worker.

    results of a node (values + errors in place, from an IMap task or a linear call)
        |  an error in place (a timeout, a worker lost, a result that could not be pickled,
        |  a BaseException raised by the function): PiperError(exc), logged
        |  Busy: the seconds the Worker was busy (per stage when fused), unwrapped
        |  WorkerError -> PiperError (logged); StagesFailed -> passed on through the stages
        |  counted (errors; a fused node's items) and tracked ({index: result})
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
from typing import TYPE_CHECKING, Any

from ._cache_run import Counted, count_carried, count_lost, count_skipped
from ._errors import PapyError, PiperError, WorkerError
from ._fuse import StagesFailed
from ._worker import NEVER_SUSPECT, Busy

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
            values[position] = read_error(exc, piper)
        if node.cache_counts:
            count_lost(node, len(errors))
    if not PLAIN.issuperset(map(type, values)):
        odd = compress(itertools.count(), map(not_, map(PLAIN.__contains__, map(type, values))))
        for position in list(odd):
            values[position] = _convert(node, values[position])
    if node.fused:
        node.counters.items_in += len(values)     # what left the fused chain
    tracked = node.tracked
    if tracked is not None:
        index = node.settled
        for offset, value in enumerate(values):
            tracked[index + offset] = value
    node.settled += len(values)
    return values


def _convert(node: Node, result: Any) -> Any:
    """A result that is not PLAIN: its Busy time added up, an error item made."""
    if type(result) is Counted:         # a cached Worker's record (papy._cache_run)
        result = count_carried(node, result)
    if type(result) is Busy:
        if node.fused:
            for piper, seconds in zip(node.pipers, result.seconds):
                node.counters_of(piper).time_busy += seconds
        else:
            node.counters.time_busy += result.seconds
        result = result.value
        if type(result) is Counted:
            result = count_carried(node, result)
    if type(result) is StagesFailed:
        return stages_failed(node, result.errors)
    if isinstance(result, PapyError):
        return error_item(node, node.piper, result)
    return result


def error_item(node: Node, piper: Piper, error: PapyError) -> PapyError:
    """The error item ``piper`` gives for ``error`` (a WorkerError is logged and wrapped in
    a PiperError); counts it."""
    if isinstance(error, WorkerError):
        log.error("piper %r: %s", piper.name, error)
        log.debug("piper %r: traceback:\n%s", piper.name, error.traceback_text)
        error = PiperError(error)
    node.counters_of(piper).errors += 1
    return error


def stages_failed(node: Node, errors: dict[int, PapyError]) -> PapyError:
    """Fused: some stages of the node's group gave ``errors`` (``{stage: error}``); every
    stage that reads a failed one passes the error items it reads on as its Worker would
    have (``PiperError(*those)``), each counting an error; the exit's error item is the
    result."""
    made: dict[int, PapyError] = {}
    for stage, piper in enumerate(node.pipers):
        if stage in errors:
            made[stage] = error_item(node, piper, errors[stage])
            continue
        read = [made[k] for k in node.stage_inputs[stage] if k in made]
        if read:
            made[stage] = error_item(node, piper, PiperError(*read))
            count_skipped(node, piper)
    return made[len(node.pipers) - 1]


def read_error(exc: BaseException, piper: Piper) -> PiperError:
    """The error item that takes the place of a result the pool could not give (logged).
    Fused: which stage the item was in is not known; it is the chain's last Piper's."""
    if isinstance(exc, TimeoutError):
        log.warning("piper %r: an item ran longer than its timeout of %ss; a PiperError "
                    "takes its place", piper.name, piper.timeout)
    else:
        log.error("piper %r: %s: %s", piper.name, type(exc).__name__, exc)
    return PiperError(exc)
