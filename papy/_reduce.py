"""Reducer: a Piper that folds its input stream into a store, in the pool's workers.

The Piper holds what its user gave (fold, store, emit, body, windows), checked once. A run
steps it as a ReduceNode (papy._reduce_node: its windows, the data flow and the memory
bound, drawn there); the pool folds its items with a FoldCall (papy._reduce_fold).
"""
from __future__ import annotations

from typing import Any, Callable

from imap import check_seconds

from ._body import check_body, composite_worker
from ._errors import PapyError
from ._piper import Piper
from ._reduce_node import ReduceNode
from ._stores import Object


__all__ = ["Reducer"]


class Reducer(Piper):
    """A Piper that folds its stream: ``fold(store, works, others)``.

    ``Reducer(fold, store=Object, emit=None, parallel=False, body=(), every=None,
    interval=None, name=None)``

    - ``fold(store, works, others)``: fold the items ``works`` and the partial stores
      ``others`` into ``store`` (in place). On a pool, each worker folds the items it takes
      into a fresh ``store()`` and the parent merges those with ``fold(store, [], [partial])``:
      the result must not depend on how the items were split (an associative fold).
      What it returns (one item, a ``Multiple``, or None for nothing) is *recurred*: sent
      back through ``body`` and folded again.
    - ``store``: a factory of empty stores (default ``papy.inline.Object``, an attribute bag).
    - ``emit(store)``: what goes downstream at the end (default: the store itself; a
      ``Multiple``: several items; None: nothing).
    - ``body``: Pipers (or Frames) the input items and the recurred items go through before
      they are folded: the reducer's scope.
    - ``every`` (items) / ``interval`` (seconds): windows. Each ``every`` items (or
      ``interval`` seconds after its first item) a new store is started; each window emits
      when all of its work is done, in order. Without either, one store and one emit at
      the end of the input (an empty input emits ``emit(store())``).

    An error item in the input is not folded: it is counted (``counters.errors``) and kept
    in ``error_items``; the stream goes on.

    Example::

        >>> def add(store, works, others):
        ...     store.total = getattr(store, 'total', 0) + sum(works) + sum(
        ...         o.total for o in others if hasattr(o, 'total'))
        >>> total = Reducer(add, emit=lambda store: store.total).connect([range(5)])
        >>> total.start()
        >>> list(total)
        [10]
    """

    fusable = False
    is_reducer = True

    def __init__(self, fold: Callable[[Any, list[Any], list[Any]], Any],
                 store: Callable[[], Any] = Object, emit: Callable[[Any], Any] | None = None,
                 parallel: Any = False, body: Any = (), every: int | None = None,
                 interval: float | None = None, name: str | None = None):
        for what, func in (("fold", fold), ("store", store)):
            if not callable(func):
                raise TypeError(f"Reducer {what} must be callable, not {func!r}")
        if emit is not None and not callable(emit):
            raise TypeError(f"Reducer emit must be callable or None, not {emit!r}")
        if every is not None and (not isinstance(every, int) or isinstance(every, bool)
                                  or every < 1):
            raise ValueError(f"Reducer every must be an int >= 1 or None, not {every!r}")
        given, name = name, name if name is not None else getattr(fold, "__name__", "reducer")
        interval = check_seconds(f"Reducer {name!r}: interval", interval, allow_zero=False,
                                 infinite_is_none=True)
        super().__init__(composite_worker(), parallel=parallel, name=name)
        self._default_name = given is None      # the fold's name: numbered by a Dagger
        self.fold, self.store, self.emit = fold, store, emit
        self.body = check_body(f"Reducer {self.name!r}", body)
        self.every, self.interval = every, interval
        self._error_items: list[PapyError] = []

    @property
    def error_items(self) -> list[PapyError]:
        """The error items of its last run it did not fold (at most ERRORS_KEPT)."""
        return list(self._error_items)


# the node class is set on the Reducer here, once both exist (read with getattr by the run)
Reducer.node_type = ReduceNode  # type: ignore[attr-defined]  # set here, not declared
