"""The fold of a Reducer where its pool runs it: what crosses to the workers and back.

A ReduceNode (papy._reduce_node) pushes the items of its windows into an ordered IMap task
of a FoldCall, a ``_Cut`` before the first item of each run of one window; the worker folds
each run of same-window items of a batch into a fresh store (``fold(store, works, [])``)
and gives one ``Folded`` at the run's last position (the partial store, what fold returned,
the errors, the seconds). A fold that raises is retried item by item on a fresh store;
errors travel as values. Stores and recurred items cross as ``Shipped`` (pickle, or dill
when pickle refuses them).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from ._fanout import as_items
from ._stores import Shipped
from ._worker import _worker_error

__all__ = ["FoldCall", "Folded"]


class Folded:
    """What a worker gives for a run of items of one window: the partial store, what fold
    returned (to recur), the errors of items folded one by one, the seconds it took."""

    __slots__ = ("store", "recurred", "errors", "seconds")

    def __init__(self, store: Any, recurred: list[Any], errors: dict[int, Any] | None,
                 seconds: float):
        self.store, self.recurred, self.errors, self.seconds = store, recurred, errors, seconds

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unfold, (Shipped((self.store, self.recurred)), self.errors, self.seconds))


def _unfold(shipped: Shipped, errors: dict[int, Any] | None, seconds: float) -> Folded:
    store, recurred = shipped.value
    return Folded(store, recurred, errors, seconds)


class _Cut:
    """Marks the first item of a run of one window in a fold task's input."""

    __slots__ = ("item",)

    def __init__(self, item: Any):
        self.item = item

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Cut, (self.item,))


class FoldCall:
    """The fold where the pool runs it (an ``imap.BatchFunction``): ``call_batch`` gives,
    for each run of same-window items of the batch, a ``Folded`` at the run's last
    position and None elsewhere."""

    __slots__ = ("fold", "store")

    def __init__(self, fold: Callable[..., Any], store: Callable[[], Any]):
        self.fold, self.store = fold, store

    def __call__(self, item: Any) -> Folded:
        return self._fold([item.item if type(item) is _Cut else item])

    def call_batch(self, items: list[Any]) -> tuple[list[Any], None]:
        values: list[Any] = [None] * len(items)
        if _Cut not in set(map(type, items)):
            values[-1] = self._fold(items)
            return values, None
        cuts = [k for k, item in enumerate(items) if type(item) is _Cut and k]
        for begin, end in zip([0] + cuts, cuts + [len(items)], strict=True):
            run = [item.item if type(item) is _Cut else item for item in items[begin:end]]
            values[end - 1] = self._fold(run)
        return values, None

    def _fold(self, items: list[Any]) -> Folded:
        started = time.perf_counter()
        try:
            store = self.store()
        except Exception as exc:  # noqa: BLE001 - nothing folded: every item's error
            error = _worker_error(exc, self.store, [])
            return Folded(None, [], dict.fromkeys(range(len(items)), error),
                          time.perf_counter() - started)
        try:
            recurred = as_items(self.fold(store, items, []))
            errors = None
        except Exception:  # noqa: BLE001 - find the item that raises, fold the others
            store, recurred, errors = self._one_by_one(items)
        return Folded(store, recurred, errors, time.perf_counter() - started)

    def _one_by_one(self, items: list[Any]) -> tuple[Any, list[Any], dict[int, Any]]:
        store = self.store()        # it worked a moment ago
        recurred: list[Any] = []
        errors: dict[int, Any] = {}
        for position, item in enumerate(items):
            try:
                recurred += as_items(self.fold(store, [item], []))
            except Exception as exc:  # noqa: BLE001 - that item's error, as a value
                errors[position] = _worker_error(exc, self.fold, [item])
        return store, recurred, errors

    def __repr__(self) -> str:
        return f"FoldCall({getattr(self.fold, '__name__', self.fold)!r})"
