"""A Worker's cache where the Worker runs: WorkerCache, a batch of inboxes at a time.

    Worker(f, cache=cache)          in the parent: WorkerCache(worker, cache) computes the
      |                             key prefix once (fingerprint + arguments): a Worker
      |                             whose arguments have no content key is a TypeError now
      |  pickled with the Worker    (prefix, the uncached twin Worker, the Cache)
      v
    map_stage (papy._worker) -> WorkerCache.call_batch(batch)   in the thread/process/host
      upstream error in an inbox -> the twin's PiperError       record: upstream_failed
      keys of the batch (papy._keys.inbox_key; for plain items ``map(repr, items)``, in C)
      looked up in this process's index of the prefix's packs
      hits -> the stored results                                record: cached
      misses -> the twin evaluates them as a batch; an error    record: failed
                item is returned and never stored; the others   record: executed
                are stored in ONE pack, before the batch's results leave the Worker
    Worker.__call__ (one inbox) -> the same, as a batch of one

A batch costs a few dict lookups and one pickle of its results per item, and one pack file
per batch: a cached first run of cheap functions costs little more than an uncached one
(scripts/bench_cache.py). A run killed by SIGKILL loses only the batches that had not
finished: every result that left a Worker is in a pack.

The record of those four outcomes (``worker.cache_record``) and the deltas the run layer
takes from it: papy._cache_record. What is read off a batch's items (their keys, the
errors they hold): papy._cache_batch.
"""
from __future__ import annotations

import array
import copy
import threading
from collections.abc import Sequence, Set as AbstractSet
from typing import TYPE_CHECKING, Any

from ._cache import Cache
from ._cache_batch import ERRORS, holds_errors, holds_upstream_error, plain_keys
from ._cache_index import GENERATION, PrefixIndex
from ._cache_record import CacheRecord
from ._cache_run import DEFERRING, PENDING
from ._cache_store import MISSING
from ._keys import INT_KEYS, RAW_LIMIT, RAW_SCALARS, Key, UnkeyableError, call_arguments, \
    inbox_key, long_key
from ._worker import any_instance, map_stage, _worker_error

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["WorkerCache"]


class _InboxParameter:
    """Stands for the inbox among a Worker function's arguments in the key prefix."""

    def __cache_key__(self) -> str:
        return "inbox"


class _Batch:
    """What one call_batch found out, counted at its end in one go."""

    __slots__ = ("executed", "cached", "failed", "upstream", "misses", "errors", "written",
                 "warnings")

    def __init__(self) -> None:
        self.executed = self.cached = self.failed = self.upstream = 0
        self.misses = self.errors = self.written = 0
        self.warnings: list[str] = []


class _Pending:
    """A WorkerCache's entries and counts held until its batch leaves (``_defer``)."""

    __slots__ = ("lock", "index", "keys", "values", "hits", "misses", "errors", "enlisted")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.index: PrefixIndex | None = None
        self.keys: list[Key] = []
        self.values: list[Any] = []
        self.hits = self.misses = self.errors = 0
        self.enlisted = False


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
                                                        worker.kwargs, strict=True))
        try:
            self.prefix = cache._prefix(cache._identity(worker), arguments)
        except UnkeyableError as exc:
            raise TypeError(f"Worker {self.label}: its arguments cannot be part of a cache "
                            f"key ({exc}); leave them out with Cache(ignore=(name, ...)) "
                            f"or use the Worker without a cache") from None
        self._ready()

    def _ready(self) -> None:
        self.tag = self.prefix.hex()[:16]
        self.bare = getattr(self.plain, "_bare", None)
        self.record = CacheRecord()
        self._held: tuple[int, PrefixIndex] | None = None
        self._pending = _Pending()
        self.fresh()

    def fresh(self) -> CacheRecord:
        """A new use of this Worker here (made, arrived in a worker, or given to a new
        run's call): what other processes stored since is read at its next miss. Its
        record."""
        self._index().stale = True
        return self.record

    def __call__(self, inbox: Sequence[Any]) -> Any:
        """One inbox: a batch of one (a BaseException of the function is raised)."""
        results, raised = self.call_batch([inbox], False)
        if raised:
            raise raised[0]
        return results[0]

    def call_batch(self, values: list[Any], boxed: bool,
                   kinds: AbstractSet[type] | None = None
                   ) -> tuple[list[Any], dict[int, BaseException] | None]:
        """``map_stage``'s contract (papy._worker): the results of a batch of inboxes
        (``boxed``: of items, each the inbox ``[item]``), errors as values, and
        ``{position: exception}`` for what is not an Exception; ``kinds``: what the caller
        knows of the items' exact types."""
        cache = self.cache
        if len(values) == 1 and boxed and cache.key is None \
                and type(values[0]) in RAW_SCALARS:
            return self._one(values)
        tally = _Batch()
        index = self._index()
        keys, ints = plain_keys(values, boxed, cache.key, kinds)
        if keys is not None and index.empty():
            return self._first(index, values, keys, ints, tally)
        if keys is not None:
            positions: list[int] | None = None          # every position, keyed
            results: list[Any] = []
            unkeyed: list[int] = []
        else:
            results = [None] * len(values)
            positions, keys, unkeyed = self._sort(values, boxed, results, tally)
        found, misses = cache._find(index, keys) if keys else ([], [])
        if positions is None:
            results = found
        else:
            for position, value in zip(positions, found, strict=True):
                results[position] = value
            misses = [positions[m] for m in misses]
        tally.cached = len(keys) - len(misses)
        tally.misses = len(misses)
        raised = None
        if misses or unkeyed:
            raised = self._evaluate(index, values, boxed, results, keys, positions, misses,
                                    unkeyed, tally)
        self._account(tally)
        return results, raised

    def _first(self, index: PrefixIndex, values: list[Any], keys: list[Key],
               ints: array.array[int] | None, tally: _Batch
               ) -> tuple[list[Any], dict[int, BaseException] | None]:
        """A batch of plain items that nothing here is known for (a first run): evaluated
        and stored without a lookup."""
        computed, raised = map_stage(self.plain, self.bare, values, True, RAW_SCALARS)
        if raised or holds_errors(computed):
            results = [MISSING] * len(values)
            tally.misses = len(values)
            raised = self._evaluate(index, values, True, results, keys, None,
                                    list(range(len(values))), [], tally, computed, raised)
            self._account(tally)
            return results, raised
        tally.misses = tally.executed = len(values)
        self._keep(index, keys, computed, tally, ints)
        self._account(tally)
        return computed, None

    def _one(self, values: list[Any]) -> tuple[list[Any], dict[int, BaseException] | None]:
        """One plain item (an IMap's tracked mode evaluates item by item): call_batch with
        nothing it does not need; in a per-item call of the run layer, the entry and the
        counts wait for the batch (``_defer``)."""
        cache, record, later = self.cache, self.record, DEFERRING.on
        item = values[0]
        if type(item) is int and INT_KEYS[0] <= item < INT_KEYS[1]:
            key: Key = item
        else:
            text = repr(item)
            key = text if len(text) <= RAW_LIMIT else long_key(text)
        index = self._index()
        found = cache._find_one(index, key)
        if found is not MISSING:
            record.add(cached=1)
            if later:
                self._defer(index, None, None, hits=1)
            else:
                cache._count("hits")
            return [found], None
        results, raised = map_stage(self.plain, self.bare, values, True, RAW_SCALARS)
        result = results[0]
        if raised or isinstance(result, ERRORS):
            errors = 0 if raised else 1
            if not raised:
                record.add(failed=1)
            if later:
                self._defer(index, None, None, misses=1, errors=errors)
            else:
                cache._count_many(misses=1, errors=errors)
            return results, raised
        record.add(executed=1)
        if later:
            self._defer(index, key, result, misses=1)
            return results, None
        written, warnings = cache._keep(index, [key], results, self.tag, self.label)
        cache._count_many(misses=1, bytes=written)
        if warnings:
            record.add(warnings=warnings)
        return results, None

    def _defer(self, index: PrefixIndex, key: Key | None, value: Any,
               hits: int = 0, misses: int = 0, errors: int = 0) -> None:
        """Hold an entry (and counts) of a per-item call until its batch leaves the worker
        (papy._cache_run.PENDING)."""
        pending = self._pending
        with pending.lock:
            if key is not None:
                pending.keys.append(key)
                pending.values.append(value)
                pending.index = index
            pending.hits += hits
            pending.misses += misses
            pending.errors += errors
            enlist, pending.enlisted = not pending.enlisted, True
            full = len(pending.keys) >= PENDING.LIMIT
        if enlist:
            PENDING.enlist(self)
        if full:
            self.write_pending()

    def write_pending(self) -> None:
        """Write the deferred entries in one pack, and count (PendingWrites.flush)."""
        pending = self._pending
        with pending.lock:
            index, keys, values = pending.index, pending.keys, pending.values
            counts = {"hits": pending.hits, "misses": pending.misses,
                      "errors": pending.errors}
            pending.reset()
        written, warnings = (self.cache._keep(index, keys, values, self.tag, self.label)
                             if keys and index is not None else (0, ()))
        self.cache._count_many(bytes=written, **counts)
        if warnings:
            self.record.add(warnings=warnings)

    def _index(self) -> PrefixIndex:
        """This process's index of the prefix (kept until prune or clear drop it)."""
        held = self._held
        if held is None or held[0] != GENERATION[0]:
            held = self._held = (GENERATION[0], self.cache._index(self.prefix))
        return held[1]

    def _sort(self, values: list[Any], boxed: bool, results: list[Any], tally: _Batch
              ) -> tuple[list[int], list[Key], list[int]]:
        """Item by item: the positions that are looked up and their keys, the positions
        evaluated uncached (no key); upstream errors and failing key= functions are
        settled here, in ``results``."""
        cache = self.cache
        positions: list[int] = []
        keys: list[Key] = []
        unkeyed: list[int] = []
        for position, value in enumerate(values):
            inbox = [value] if boxed else value
            if holds_upstream_error(inbox):
                results[position] = self.plain(inbox)       # PiperError(*those errors)
                tally.upstream += 1
                continue
            try:
                keys.append(inbox_key(inbox if cache.key is None else [cache.key(inbox)]))
            except UnkeyableError as exc:
                warning = cache._uncacheable(self.tag, f"an item of {self.label} has no key "
                                                       f"({exc})")
                tally.warnings += [warning] if warning else []
                unkeyed.append(position)
                continue
            except Exception as exc:  # noqa: BLE001 - the key= function failed: its error
                results[position] = _worker_error(exc, cache.key, inbox)
                tally.failed += 1
                continue
            positions.append(position)
        return positions, keys, unkeyed

    def _evaluate(self, index: PrefixIndex, values: list[Any], boxed: bool,
                  results: list[Any], keys: list[Key], positions: list[int] | None,
                  misses: list[int], unkeyed: list[int], tally: _Batch,
                  computed: list[Any] | None = None,
                  raised: dict[int, BaseException] | None = None
                  ) -> dict[int, BaseException] | None:
        """Evaluate the misses (and the unkeyed items) as one batch (unless ``computed``
        already), store what may be stored (one pack), put the results in place; what was
        raised, by position."""
        every = not unkeyed and len(misses) == len(values)
        todo = misses if not unkeyed else sorted(misses + unkeyed)
        if computed is None:
            # positions None: plain_keys keyed every item, all RAW_SCALARS (never suspect)
            computed, raised = map_stage(self.plain, self.bare,
                                         values if every else [values[p] for p in todo],
                                         boxed, RAW_SCALARS if positions is None else None)
        clean = not raised and not any_instance(computed, ERRORS)
        if every and clean:                             # the common first run: all stored
            results[:] = computed
            tally.executed = len(computed)
            self._keep(index, keys, computed, tally)
            return None
        key_at = dict(zip(range(len(values)) if positions is None else positions, keys,
                          strict=True))
        lost: dict[int, BaseException] = {}
        keep_keys: list[Key] = []
        keep: list[Any] = []
        for k, (position, value) in enumerate(zip(todo, computed, strict=True)):
            if raised and k in raised:
                lost[position] = raised[k]
                results[position] = None
                continue
            results[position] = value
            error = not clean and isinstance(value, ERRORS)
            if error:
                tally.failed += 1
            else:
                tally.executed += 1
            key = key_at.get(position)
            if key is None:
                continue                                # unkeyed: never stored
            if error:
                tally.errors += 1
            else:
                keep_keys.append(key)
                keep.append(value)
        self._keep(index, keep_keys, keep, tally)
        return lost or None

    def _keep(self, index: PrefixIndex, keys: list[Key], values: list[Any],
              tally: _Batch, ints: array.array[int] | None = None) -> None:
        if DEFERRING.on:                    # one item of a tracked batch: written later
            for key, value in zip(keys, values, strict=True):
                self._defer(index, key, value)
            return
        written, warnings = self.cache._keep(index, keys, values, self.tag, self.label, ints)
        tally.warnings.extend(warnings)
        tally.written += written

    def _account(self, tally: _Batch) -> None:
        self.cache._count_many(hits=tally.cached, misses=tally.misses, errors=tally.errors,
                               bytes=tally.written)
        self.record.add(tally.executed, tally.cached, tally.failed, tally.upstream,
                        tally.warnings)

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.plain, self.cache, self.label, self.prefix)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.plain, self.cache, self.label, self.prefix = state
        self._ready()
