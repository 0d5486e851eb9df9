"""A Worker's cache where the Worker runs, and the per-item record the run layer reads.

    Worker(f, cache=cache)          in the parent: WorkerCache(worker, cache) computes the
      |                             key prefix once (fingerprint + arguments): a Worker
      |                             whose arguments have no content key is a TypeError now
      |  pickled with the Worker    (prefix, the uncached twin Worker, the Cache)
      v
    Worker.__call__ -> _evaluate -> WorkerCache(inbox)      in the thread/process/host
      upstream error in the inbox -> the twin's PiperError   record: upstream_failed
      key = prefix + content digest of the inbox (key= maps the inbox first)
      hit  -> the stored result                             record: cached
      miss -> the twin evaluates; an error item is returned  record: failed
              and never stored; else stored, then returned   record: executed
              (the entry is on disk before the result leaves the Worker)

The **record** (``worker.cache_record``, a ``CacheRecord``) counts those four outcomes where
the Worker runs: one record per copy of the Worker (per process; threads of a pool share
one, under a lock). ``record.take()`` returns what was counted since the previous take
(a ``RecordDelta``, picklable, or None when nothing was) and starts again from zero, so
the run layer can call it after each batch where the Worker runs and send the delta with
the batch's results: summed in the parent, the deltas count every item exactly once,
whatever thread took them. A delta also carries the cache's warnings raised meanwhile
(unpicklable results, a full disk), for the parent to show: in a worker process they
are logged only there.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._cache import Cache
from ._errors import PiperError, WorkerError
from ._keys import UnkeyableError, call_arguments, content_digest
from ._worker import _worker_error

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["CacheRecord", "RecordDelta", "WorkerCache"]

OUTCOMES = ("executed", "cached", "failed", "upstream_failed")
_EXECUTED, _CACHED, _FAILED, _UPSTREAM_FAILED = range(4)
_ERRORS = (WorkerError, PiperError)


@dataclasses.dataclass(frozen=True)
class RecordDelta:
    """The outcomes of a cached Worker's items counted since the previous take."""

    executed: int = 0
    cached: int = 0
    failed: int = 0
    upstream_failed: int = 0
    warnings: tuple[str, ...] = ()

    def __add__(self, other: RecordDelta) -> RecordDelta:
        return RecordDelta(self.executed + other.executed, self.cached + other.cached,
                           self.failed + other.failed,
                           self.upstream_failed + other.upstream_failed,
                           self.warnings + other.warnings)

    def counts(self) -> tuple[int, int, int, int]:
        return self.executed, self.cached, self.failed, self.upstream_failed

    def as_dict(self) -> dict[str, int]:
        """``{'executed': n, 'cached': n, 'failed': n, 'upstream_failed': n}``"""
        return dict(zip(OUTCOMES, self.counts()))


class CacheRecord:
    """Counts of a cached Worker's outcomes where it runs (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0, 0, 0, 0]
        self._warnings: list[str] = []

    def add(self, outcome: int, warning: str | None = None) -> None:
        with self._lock:
            self._counts[outcome] += 1
            if warning is not None:
                self._warnings.append(warning)

    def take(self) -> RecordDelta | None:
        """What was counted since the previous take (None: nothing), and zero again."""
        with self._lock:
            if not any(self._counts) and not self._warnings:
                return None
            executed, cached, failed, upstream_failed = self._counts
            delta = RecordDelta(executed, cached, failed, upstream_failed,
                                tuple(self._warnings))
            self._counts = [0, 0, 0, 0]
            self._warnings = []
        return delta


class _InboxParameter:
    """Stands for the inbox among a Worker function's arguments in the key prefix."""

    def __cache_key__(self) -> str:
        return "inbox"


class WorkerCache:
    """Consult ``cache`` for each inbox of ``worker`` (module docstring)."""

    def __init__(self, worker: Worker, cache: Cache):
        if not isinstance(cache, Cache):
            raise TypeError(f"Worker cache must be a papy.Cache, not {cache!r}")
        self.plain = copy.copy(worker)      # made before the worker has a cache: uncached
        self.cache = cache
        self.label = worker.__name__
        ignore = frozenset(cache.ignore)
        placeholder = _InboxParameter()
        arguments = tuple(call_arguments(func, (placeholder, *args), kwargs, ignore)
                          for func, args, kwargs in zip(worker.task, worker.args,
                                                        worker.kwargs))
        try:
            self.prefix = cache._prefix(cache._identity(worker), arguments)
        except UnkeyableError as exc:
            raise TypeError(f"Worker {self.label}: its arguments cannot be part of a cache "
                            f"key ({exc}); leave them out with Cache(ignore=(name, ...)) "
                            f"or use the Worker without a cache") from None
        self.tag = self.prefix.hex()[:16]
        self.record = CacheRecord()

    def __call__(self, inbox: Sequence[Any]) -> Any:
        record, cache = self.record, self.cache
        if _holds_upstream_error(inbox):
            record.add(_UPSTREAM_FAILED)
            return self.plain(inbox)
        try:
            item = inbox if cache.key is None else cache.key(inbox)
            key = hashlib.blake2b(self.prefix + content_digest(item), digest_size=20).digest()
        except UnkeyableError as exc:
            warning = cache._uncacheable(self.tag, f"an item of {self.label} has no key "
                                                   f"({exc})")
            result = self.plain(inbox)
            record.add(_FAILED if isinstance(result, _ERRORS) else _EXECUTED, warning)
            return result
        except Exception as exc:  # noqa: BLE001 - the key= function failed: that item's error
            record.add(_FAILED)
            return _worker_error(exc, cache.key, inbox)
        found, value = cache._lookup(key)
        if found:
            record.add(_CACHED)
            return value
        result = self.plain(inbox)
        if isinstance(result, _ERRORS):
            cache._count("errors")
            record.add(_FAILED)
            return result
        record.add(_EXECUTED, cache._save(key, result, self.tag, self.label))
        return result

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.plain, self.cache, self.label, self.prefix)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.plain, self.cache, self.label, self.prefix = state
        self.tag = self.prefix.hex()[:16]
        self.record = CacheRecord()


def _holds_upstream_error(inbox: Sequence[Any]) -> bool:
    """What Worker._evaluate looks for before it evaluates (one level into lists)."""
    try:
        for element in inbox:
            if isinstance(element, PiperError):
                return True
            if type(element) is list and any(isinstance(e, PiperError) for e in element):
                return True
    except TypeError:
        return False
    return False
