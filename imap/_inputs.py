"""How the feeder reads a task's input: in bulk (steady, in memory), item by item (may
wait), or first when it reads results of an IMap (chained). See ``imap._feeder``."""
from __future__ import annotations

import itertools

_STEADY = {type(iter(kind())) for kind in (list, tuple, set, frozenset, dict, str, bytes,
                                           bytearray)}
_STEADY |= {type(iter(range(1))), type(iter(range(1 << 64))), type(iter(b"".decode())),
            type(iter({}.values())), type(iter({}.items())), itertools.count,
            itertools.repeat}


def _inner_iterators(obj) -> list:
    """The iterators a zip, map or enumerate reads from ([] for anything else)."""
    if type(obj) not in (zip, map, enumerate):
        return []
    return [part for part in obj.__reduce__()[1] if hasattr(part, "__next__")]


def _is_steady(iterator) -> bool:
    """An in-memory iterator that never waits for data (a list, a range, ...), possibly
    behind zip/map/enumerate, or one whose class has ``__imap_take__(count)`` (see
    ``imap._feeder._pull``): read in bulk. Anything else (generators, files, sockets)
    is read item by item so that items never wait long for the rest of their batch."""
    if type(iterator) in _STEADY or hasattr(type(iterator), "__imap_take__"):
        return True
    parts = _inner_iterators(iterator)
    return bool(parts) and all(_is_steady(part) for part in parts)


def _is_chained(iterable) -> bool:
    """Does this input read results of an IMap (so the feeder must pull before it waits)?"""
    if getattr(iterable, "__imap_chained__", False):   # IMap, TaskIterator, a task's stream
        return True
    return any(_is_chained(part) for part in _inner_iterators(iterable))
