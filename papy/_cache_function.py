"""CachedFunction: a function whose results a papy.Cache keeps (what ``@cache`` returns).

    square(3)                           a call of the decorated function
      |  key = its bound arguments (defaults filled in, the cache's ignore= left out;
      |        key= maps the first), as papy._keys.inbox_key sees a one-item inbox
      v
    Cache._find_one(index of the prefix, key, timed=True)   --hit--> the stored result
      | miss                            (the index is read again every REFRESH_SECONDS:
      v                                 other processes may have stored the call meanwhile)
    the function runs --exception--> raised as usual, never stored
      | its result
      v
    Cache._keep(index, [key], [result]): one pack

A call whose arguments have no content key runs uncached (one warning). The prefix
(fingerprint of the function, or its name: code=False) is computed at the first call, not
at import, and travels with a pickled copy (CachedFunction.__reduce__) so every process
uses one key.
"""
from __future__ import annotations

import functools
import importlib
import types
from collections.abc import Callable
from typing import Any

from ._cache import Cache
from ._cache_store import MISSING
from ._keys import Key, UnkeyableError, call_arguments, inbox_key

__all__ = ["CachedFunction"]


class CachedFunction:
    """A function whose results are cached (what ``@cache`` returns).

    A call binds its arguments to the function's parameters (defaults filled in, the
    cache's ``ignore`` left out); the first argument is the item (``key=`` maps it). A
    hit returns the stored result; a miss calls the function and stores what it returns.
    An exception is raised as usual and nothing is stored.

    Pickled (to a process pool, a remote host) by reference when the module defines it
    (the copy there uses this cache object, so the statistics add up), else by value.
    """

    def __init__(self, func: Callable[..., Any], cache: Cache):
        if not callable(func):
            raise TypeError(f"a Cache decorates a callable, not {func!r}")
        if not isinstance(cache, Cache):
            raise TypeError(f"CachedFunction needs a Cache, not {cache!r}")
        functools.update_wrapper(self, func)
        self._label: str = getattr(func, "__qualname__", None) or repr(func)
        self.__papy_fingerprint_of__ = func
        self.cache = cache
        self._func = func
        self._prefix_bytes: bytes | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cache = self.cache
        try:
            key = self._key(args, kwargs)
        except UnkeyableError as exc:
            cache._uncacheable(self._tag(), f"a call of {self._label} has no key "
                                            f"({exc})")
            return self._func(*args, **kwargs)
        index = cache._index(self._prefix())
        value = cache._find_one(index, key, timed=True)
        if value is not MISSING:
            cache._count("hits")
            return value
        cache._count("misses")
        try:
            value = self._func(*args, **kwargs)
        except Exception:
            cache._count("errors")
            raise
        written, _ = cache._keep(index, [key], [value], self._tag(), self._label)
        if written:
            cache._count("bytes", written)
        return value

    def _prefix(self) -> bytes:
        if self._prefix_bytes is None:      # lazily: fingerprinting at import costs time
            self._prefix_bytes = self.cache._prefix(self.cache._identity(self._func), ())
        return self._prefix_bytes

    def _tag(self) -> str:
        return self._prefix().hex()[:16]

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Key:
        """The call's key in the function's packs: its bound arguments (key= applied to
        the first) as papy._keys.inbox_key sees a one-item inbox."""
        cache = self.cache
        arguments = list(call_arguments(self._func, args, kwargs, frozenset(cache.ignore)))
        if cache.key is not None and arguments:
            name, first = arguments[0]
            arguments[0] = (name, cache.key(first))
        return inbox_key([tuple(arguments)])

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return self if instance is None else types.MethodType(self, instance)

    def __repr__(self) -> str:
        return f"<cached {self.__module__}.{self._label} in {self.cache.root}>"

    def __reduce__(self) -> tuple[Any, ...]:
        module, qualname = self.__module__, self._label
        if module != "__main__" and _defined_at(module, qualname, self._func):
            return (_by_reference, (module, qualname, self.cache, self._prefix()))
        return (_by_value, (self._func, self.cache, self._prefix()))


def _attribute(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _defined_at(module: str, qualname: str, func: Any) -> bool:
    try:
        found = _attribute(module, qualname)
    except Exception:  # noqa: BLE001 - not importable by name: pickled by value
        return False
    return isinstance(found, CachedFunction) and found._func is func


def _by_reference(module: str, qualname: str, cache: Cache, prefix: bytes) -> CachedFunction:
    found = _attribute(module, qualname)
    func = found._func if isinstance(found, CachedFunction) else found
    return _by_value(func, cache, prefix)


def _by_value(func: Callable[..., Any], cache: Cache, prefix: bytes) -> CachedFunction:
    copy = CachedFunction(func, cache)
    copy._prefix_bytes = prefix         # the sender's: one key in every process
    return copy
