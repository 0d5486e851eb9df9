"""Cache: results that survive the run, in a directory, keyed by code and content.

    caller (a Worker where it runs: papy._cache_worker, a batch at a time; or a
      |     decorated function: papy._cache_function, a call at a time)
      |  prefix = digest(format, papy series, Python cache tag,
      |                  fingerprint of the function (or its name: code=False),
      |                  its arguments (ignore= left out))
      |  key = the item's key (papy._keys.inbox_key; key= maps the item first)
      v
    Cache._find(prefix, keys) --hits--> the stored results (papy._cache_store: this
      | misses                          process's index of the prefix's packs)
      v
    the function runs --error--> returned/raised as usual, never stored
      | results
      v
    Cache._keep(prefix, keys, results): one pack per batch (papy._cache_packs), counted
    in papy._cache_stats (per-process counter files); an unpicklable result or a failing
    disk: not stored, one warning

A ``Cache`` is a small picklable object (the root, the options, an id): copies sent to
threads, processes and remote hosts that share the directory all count into the same
statistics and use the same entries. Nothing runs in the background; every method is safe
to call from any thread.

The key holds papy's cache format, papy's major.minor version and the Python cache tag
(``cpython-311``): a directory written by another papy series or another Python is a miss
everywhere (and not an error); so is an entry that cannot be read or unpickled here.
"""
from __future__ import annotations

import array
import functools
import hashlib
import logging
import os
import sys
import threading
import types
import uuid
from collections.abc import Callable, Iterable
from itertools import compress, repeat
from operator import is_, is_not
from typing import Any

from . import _cache_store
from ._cache_stats import StatsFolder
from ._cache_index import PrefixIndex, index_of
from ._cache_store import FULL_DISK, MISSING, Store
from ._fingerprint import fingerprint
from ._keys import Key, content_digest

__all__ = ["Cache"]

log = logging.getLogger(__name__)

_DIGEST = 20
_NO_WARNINGS: tuple[str, ...] = ()


def _papy_series() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return ".".join(version("papy").split(".")[:2])
        except PackageNotFoundError:
            return "dev"
    except ImportError:        # pragma: no cover - importlib.metadata is in 3.8+
        return "dev"


KEY_SALT = (f"papy-cache format {_cache_store.FORMAT}, papy {_papy_series()}, "
            f"{sys.implementation.cache_tag}\n").encode()


class _Shared:
    """What the views of one Cache share in a process: its id, the epoch prune() compares
    with, and this process's warn-once and write-off state."""

    def __init__(self, cache_id: str, epoch_ns: int):
        self.cache_id, self.epoch_ns = cache_id, epoch_ns
        self.lock = threading.Lock()
        self.writes_off: str | None = None      # why, once writes failed for good here
        self.warned: set[str] = set()


class Cache:
    """A result cache in the directory ``root``, keyed by code, arguments and content.

    ``Cache(root, code=True, ignore=(), key=None)``: the options hold for every use of
    this cache; ``cache(code=..., ignore=..., key=...)`` gives a view with other options
    (same directory, same statistics) that decorates one function or goes to a Worker.

    - ``code``: the function's fingerprint (``papy.fingerprint``) is part of the key;
      ``False`` uses its qualified name instead (pacer's rule: a changed body returns
      the old results).
    - ``ignore``: names of arguments left out of the key, however they are passed.
    - ``key``: a callable mapping the input item (a Worker's inbox; a plain function's
      first argument) to what stands for it in the key (e.g. an id field).

    Uses: ``@cache`` / ``@cache(ignore=('verbose',))`` on a function;
    ``Worker(f, cache=cache)``; ``Piper(f, cache=cache)``. See docs/cache.md.

    Example::

        >>> import tempfile
        >>> cache = Cache(tempfile.mkdtemp())
        >>> @cache
        ... def square(x):
        ...     return x * x
        >>> square(3), square(3)
        (9, 9)
        >>> stats = cache.stats()
        >>> stats['hits'], stats['misses']
        (1, 1)
    """

    def __init__(self, root: str | os.PathLike[str], code: bool = True,
                 ignore: Iterable[str] = (), key: Callable[[Any], Any] | None = None):
        self.root = os.path.abspath(os.fspath(root))
        self.code, self.ignore, self.key = _options(code, ignore, key)
        self._store = Store(self.root)
        self._stats = StatsFolder(self.root, uuid.uuid4().hex)
        try:
            self._store.make()
            epoch = self._stats.touch_epoch()
        except (NotADirectoryError, FileExistsError):
            raise
        except OSError as exc:
            log.warning("papy cache %s: cannot prepare the directory (%s); results will "
                        "be read where present but may not be stored", self.root, exc)
            epoch = 0
        self._shared = _Shared(os.path.basename(self._stats.folder), epoch)

    # -- options and views -----------------------------------------------------------
    def __call__(self, func: Callable[..., Any] | None = None, /, *, code: bool | None = None,
                 ignore: Iterable[str] | None = None,
                 key: Callable[[Any], Any] | None = None) -> Any:
        """``@cache`` decorates ``func``; ``cache(code=..., ignore=..., key=...)`` returns a
        view with those options, itself a decorator (``@cache(ignore=('verbose',))``)."""
        view = self if code is None and ignore is None and key is None else self._view(
            self.code if code is None else code,
            self.ignore if ignore is None else ignore,
            self.key if key is None else key)
        if func is None:
            return view
        from ._cache_function import CachedFunction     # which imports this module
        return CachedFunction(func, view)

    def _view(self, code: bool, ignore: Iterable[str], key: Callable[[Any], Any] | None
              ) -> Cache:
        view = object.__new__(Cache)
        view.__dict__.update(self.__dict__)
        view.code, view.ignore, view.key = _options(code, ignore, key)
        return view

    # -- public ----------------------------------------------------------------------
    def stats(self, reset: bool = False) -> dict[str, int]:
        """Counts summed over every process and thread that used this cache (or a copy or
        view of it) since it was made, or since ``stats(reset=True)``, which returns the
        counts before the reset: ``hits``, ``misses``, ``bytes`` (result data this cache
        wrote; a result already stored by its content costs none), ``errors`` (results
        not stored because they were errors), ``uncacheable`` (items without a content
        key, unpicklable results), ``write_errors``."""
        return self._stats.reset() if reset else self._stats.totals()

    def prune(self) -> dict[str, int]:
        """Remove the entries not stored or read since the previous ``prune()`` of this
        cache, or since it was made (pacer's ``remove_unused_entries``), the result files
        no entry points at, leftover temporary files, and the statistics of other Cache
        objects unused since then. Returns ``{'entries': n, 'results': n, 'bytes': n}``.

        Call it after a run: copies of the cache in workers that are still running keep
        the previous time, and an entry they read without storing may then be removed."""
        with self._shared.lock:
            unused_before = self._shared.epoch_ns
            now = self._stats.touch_epoch()
            removed = self._store.prune(unused_before, now)
            self._stats.remove_stale(unused_before)
            self._shared.epoch_ns = now
        return removed

    def clear(self) -> None:
        """Remove every entry and result of the directory (all functions; the statistics
        stay)."""
        self._store.clear()

    def __repr__(self) -> str:
        return (f"Cache({self.root!r}, code={self.code!r}, ignore={self.ignore!r}, "
                f"key={self.key!r})")

    def __getstate__(self) -> dict[str, Any]:
        shared = self._shared
        return {"root": self.root, "code": self.code, "ignore": self.ignore, "key": self.key,
                "id": shared.cache_id, "epoch": shared.epoch_ns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root, self.code, self.ignore, self.key = (state["root"], state["code"],
                                                       state["ignore"], state["key"])
        self._store = Store(self.root)
        self._stats = StatsFolder(self.root, state["id"])
        self._shared = _Shared(state["id"], state["epoch"])

    # -- for the callers: papy._cache_worker and papy._cache_function --------------
    def _prefix(self, identity: str, arguments: Any) -> bytes:
        """The key part of a function and its arguments (UnkeyableError)."""
        digest = hashlib.blake2b(KEY_SALT, digest_size=_DIGEST)
        digest.update(identity.encode("utf-8", "surrogatepass"))
        digest.update(content_digest(arguments))
        return digest.digest()

    def _identity(self, func: Any) -> str:
        """The function's part of the key: its fingerprint, or its name (code=False)."""
        return fingerprint(func) if self.code else "name " + _qualified_names(func)

    def _count(self, field: str, amount: int = 1) -> None:
        self._stats.count(field, amount)

    def _count_many(self, **amounts: int) -> None:
        self._stats.count_many(amounts)

    def _index(self, prefix: bytes) -> PrefixIndex:
        """This process's index of the entries of ``prefix`` (papy._cache_index)."""
        return index_of(self._store.packs, prefix)

    def _find(self, index: PrefixIndex, keys: list[Key]
              ) -> tuple[list[Any], list[int]]:
        """The stored result of each key (MISSING where there is none or it cannot be
        read) and the positions of the misses; not counted (the caller counts)."""
        locations = index.find(keys)
        if locations and locations[0] is None and locations.count(None) == len(keys):
            # all misses (a first run): one C scan
            return [MISSING] * len(keys), list(range(len(keys)))
        misses = list(compress(range(len(keys)), map(is_, locations, repeat(None))))
        store = self._store
        if not misses:
            results = store.fetch(index, keys,
                                  locations)  # type: ignore[arg-type]  # no None: no misses
        else:
            found = list(compress(range(len(keys)), map(is_not, locations, repeat(None))))
            results = [MISSING] * len(keys)
            fetched = store.fetch(index, [keys[k] for k in found],
                                  [locations[k] for k in found])  # type: ignore[misc]  # found
            for k, value in zip(found, fetched, strict=True):
                results[k] = value
        # the misses, and the entries whose pack or result file could not be read here
        return results, list(compress(range(len(keys)), map(is_, results, repeat(MISSING))))

    def _find_one(self, index: PrefixIndex, key: Key, timed: bool = False) -> Any:
        """The stored result of one key, or MISSING (not counted); ``timed``: see
        PrefixIndex.find_one."""
        location = index.find_one(key, timed)
        if location is None:
            return MISSING
        return self._store.fetch(index, [key], [location])[0]

    def _keep(self, index: PrefixIndex, keys: list[Key], values: list[Any],
              tag: str, label: str, ints: array.array[int] | None = None
              ) -> tuple[int, tuple[str, ...]]:
        """Store ``values`` under ``keys`` (one pack; ``ints``: the keys packed as int64,
        papy._cache_packs.encode_keys): (bytes written, the warnings logged now, for the
        caller's record). Counts what could not be stored."""
        if self._shared.writes_off is not None or not keys:
            return 0, _NO_WARNINGS
        try:
            saved = self._store.save(index, keys, values, ints)
        except OSError as exc:
            self._count("write_errors")
            warning = self._write_failed(exc)
            return 0, (warning,) if warning else _NO_WARNINGS
        if not saved.unpicklable:
            return saved.written, _NO_WARNINGS
        first = next(iter(saved.unpicklable.values()))
        warning = self._uncacheable(tag, f"a result of {label} cannot be pickled "
                                         f"({type(first).__name__}: {first})",
                                    len(saved.unpicklable))
        return saved.written, (warning,) if warning else _NO_WARNINGS

    def _uncacheable(self, tag: str, why: str, count: int = 1) -> str | None:
        """Count items that cannot be cached; warn once per cache and function."""
        self._count("uncacheable", count)
        if not self._stats.warn_once(tag):
            return None
        message = f"papy cache {self.root}: {why}; such items run uncached"
        log.warning("%s", message)
        return message

    def _write_failed(self, exc: OSError) -> str | None:
        shared = self._shared
        with shared.lock:
            if exc.errno in FULL_DISK:
                first = shared.writes_off is None
                shared.writes_off = exc.strerror or str(exc)
                if not first:
                    return None
                message = (f"papy cache {self.root}: cannot store results ({exc}); results "
                           f"are no longer stored by this process (those stored are still "
                           f"read): free space or give the Cache another directory")
            else:
                if "write" in shared.warned:
                    return None
                shared.warned.add("write")
                message = (f"papy cache {self.root}: a result could not be stored ({exc}); "
                           f"the item goes on uncached (said once per process)")
        log.warning("%s", message)
        return message


def _options(code: bool, ignore: Iterable[str], key: Callable[[Any], Any] | None
             ) -> tuple[bool, tuple[str, ...], Callable[[Any], Any] | None]:
    if not isinstance(code, bool):
        raise TypeError(f"Cache code must be True or False, not {code!r}")
    if isinstance(ignore, str):
        ignore = (ignore,)
    names = tuple(ignore)
    if not all(isinstance(name, str) for name in names):
        raise TypeError(f"Cache ignore must be names of arguments (strs), not {ignore!r}")
    if key is not None and not callable(key):
        raise TypeError(f"Cache key must be None or a callable of the item, not {key!r}")
    return code, names, key


def _qualified_names(func: Any) -> str:
    """code=False: the qualified names of the function(s), pacer's rule."""
    from ._worker import Worker
    if isinstance(func, Worker):
        return ", ".join(_qualified_names(f) for f in func.task)
    if isinstance(func, functools.partial):
        return _qualified_names(func.func)
    if isinstance(func, types.MethodType):
        func = func.__func__
    target = getattr(func, "__papy_fingerprint_of__", func)
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{name}"
