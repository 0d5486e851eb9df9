"""What a WorkerCache reads off a batch's items, as pure functions (no state, no cache).

    plain_keys(values, boxed, key)      before the lookup: the keys of a batch of plain
                                        items, in C, as papy._keys.inbox_key makes them one
                                        by one (None: the items are keyed one by one)
    holds_upstream_error(inbox)         before evaluating: an inbox that holds a PiperError
                                        is settled without calling the function
    holds_errors(results)               after evaluating: does the batch hold an error item
                                        (never stored)?

The common batches (plain scalars in, plain results out) are settled by one scan of the
types; isinstance runs only where a type could be an error.
"""
from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence, Set as AbstractSet
from typing import Any

from ._errors import PiperError, WorkerError
from ._keys import INT_KEYS, RAW_LIMIT, RAW_SCALARS, Key, long_key
from ._worker import NEVER_SUSPECT

__all__ = ["ERRORS", "plain_keys", "holds_errors", "holds_upstream_error"]

#: the error items a Worker returns as values: counted as failed, never stored
ERRORS = (WorkerError, PiperError)
_SHORT = frozenset({float, bool, complex, type(None)})   # reprs of at most 51 characters
_INT = {int}


def plain_keys(values: list[Any], boxed: bool, key: Callable[[Any], Any] | None,
               kinds: AbstractSet[type] | None = None
               ) -> tuple[list[Key] | None, array[int] | None]:
    """The keys of a batch of plain items (RAW_SCALARS, no key=), in C, as
    papy._keys.inbox_key makes them one by one; else None. A batch of ints of 64 bits
    is its own keys, and those packed as int64 (the range check; the store writes them
    as they are). ``kinds``: the items' exact types, if the caller has them (a fused
    stage's: papy._fuse), else one scan finds them."""
    if not boxed or key is not None or not values:
        return None, None
    if kinds is None:
        kinds = set(map(type, values))
    if not RAW_SCALARS.issuperset(kinds):
        return None, None
    if kinds == _INT:
        try:
            return values, array("q", values)
        except OverflowError:           # past 64 bits: those are keyed by their repr
            pass
    keys: list[Key] = list(map(repr, values))
    if int in kinds:                    # ints are their own keys, the others reprs
        keys = [v if type(v) is int and INT_KEYS[0] <= v < INT_KEYS[1] else k
                for v, k in zip(values, keys, strict=True)]
    elif _SHORT.issuperset(kinds):
        return keys, None               # no repr of these is longer than RAW_LIMIT
    if any(type(k) is str and len(k) > RAW_LIMIT for k in keys):
        keys = [long_key(k) if type(k) is str and len(k) > RAW_LIMIT else k for k in keys]
    return keys, None


def holds_errors(values: list[Any]) -> bool:
    """Does ``values`` hold an error item? One scan of the types (which settles batches of
    plain results), then isinstance only for the types that could be one."""
    kinds = set(map(type, values))
    return not NEVER_SUSPECT.issuperset(kinds) and any(issubclass(k, ERRORS) for k in kinds)


def holds_upstream_error(inbox: Sequence[Any]) -> bool:
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
