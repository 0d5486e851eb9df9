"""The per-item record of a cached Worker where it runs, and the deltas the run layer reads.

The **record** (``worker.cache_record``, a ``CacheRecord``) counts the four outcomes of
papy._cache_worker (executed, cached, failed, upstream_failed) where the Worker runs: one
record per copy of the Worker (per process; threads of a pool share one, under a lock).
``record.take()`` returns what was counted since the previous take (a ``RecordDelta``,
picklable, or None when nothing was) and starts again from zero. The run layer's calls
(``TimedCall``, ``BoxingCall``, ``FusedCall``: papy._cache_run.carry) take it after each
batch and send it with the batch's results, as ``Busy`` carries busy time; summed in the
parent, the deltas count every item exactly once, whatever thread took them. A delta also
carries the cache's warnings raised meanwhile (unpicklable results, a full disk) and the
process it comes from: the parent logs those of other processes.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["OUTCOMES", "CacheRecord", "RecordDelta"]

OUTCOMES = ("executed", "cached", "failed", "upstream_failed")


class RecordDelta:
    """The outcomes of a cached Worker's items counted since the previous take, with the
    warnings raised meanwhile and the process that counted them (picklable)."""

    __slots__ = ("executed", "cached", "failed", "upstream_failed", "warnings", "pid")

    def __init__(self, executed: int = 0, cached: int = 0, failed: int = 0,
                 upstream_failed: int = 0, warnings: tuple[str, ...] = (), pid: int = 0):
        self.executed, self.cached, self.failed = executed, cached, failed
        self.upstream_failed, self.warnings, self.pid = upstream_failed, warnings, pid

    def __add__(self, other: RecordDelta) -> RecordDelta:
        return RecordDelta(self.executed + other.executed, self.cached + other.cached,
                           self.failed + other.failed,
                           self.upstream_failed + other.upstream_failed,
                           self.warnings + other.warnings, other.pid or self.pid)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordDelta):
            return NotImplemented
        return (self.counts(), self.warnings) == (other.counts(), other.warnings)

    __hash__ = None  # type: ignore[assignment]  # unhashable, on purpose

    def __reduce__(self) -> tuple[Any, ...]:
        return (RecordDelta, (self.executed, self.cached, self.failed, self.upstream_failed,
                              self.warnings, self.pid))

    def __repr__(self) -> str:
        return f"RecordDelta({self.as_dict()}, warnings={len(self.warnings)})"

    def counts(self) -> tuple[int, int, int, int]:
        return self.executed, self.cached, self.failed, self.upstream_failed

    def as_dict(self) -> dict[str, int]:
        """``{'executed': n, 'cached': n, 'failed': n, 'upstream_failed': n}``"""
        return dict(zip(OUTCOMES, self.counts(), strict=True))


class CacheRecord:
    """Counts of a cached Worker's outcomes where it runs (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0, 0, 0, 0]
        self._warnings: list[str] = []
        self._dirty = False

    def add(self, executed: int = 0, cached: int = 0, failed: int = 0,
            upstream_failed: int = 0, warnings: Sequence[str] = ()) -> None:
        with self._lock:
            counts = self._counts
            counts[0] += executed
            counts[1] += cached
            counts[2] += failed
            counts[3] += upstream_failed
            if warnings:
                self._warnings.extend(warnings)
            self._dirty = True

    def take(self) -> RecordDelta | None:
        """What was counted since the previous take (None: nothing), and zero again."""
        if not self._dirty:         # read without the lock: an add under way is taken next
            return None
        with self._lock:
            executed, cached, failed, upstream_failed = self._counts
            delta = RecordDelta(executed, cached, failed, upstream_failed,
                                tuple(self._warnings), _PID[0])
            self._counts = [0, 0, 0, 0]
            self._warnings = []
            self._dirty = False
        return delta


_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))
