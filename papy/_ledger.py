"""Which Pipers added tasks to which IMap, in order (papy's side of the IMap's task list).

``Piper.disconnect()`` may remove its tasks only if they are the last ones added to the IMap
(``IMap.pop_task``), and must not remove anything after the IMap was stopped (``stop()``
removes every task). The IMap's public API does not say which tasks it holds, so papy keeps
this ledger: ``record`` at connect, ``remove`` at disconnect, ``stop_imap`` to stop.
"""
from __future__ import annotations

import threading

__all__ = ["record", "remove", "stop_imap"]

_TASKS: dict = {}           # {id(imap): (imap, [piper, ...])}, in the order tasks were added
_LOCK = threading.Lock()


def record(imap, piper) -> None:
    """``piper`` has just added its tasks to ``imap``."""
    with _LOCK:
        _TASKS.setdefault(id(imap), (imap, []))[1].append(piper)


def remove(imap, piper, count: int, forced: bool) -> bool:
    """Pop ``piper``'s ``count`` tasks from the (stopped) ``imap`` if they are the last;
    ``forced``: pop every task. False when other tasks were added after them."""
    with _LOCK:
        entry = _TASKS.get(id(imap))
        owners = entry[1] if entry else []
        if piper not in owners:
            return True         # the IMap was stopped: its tasks are gone already
        if owners[-1] is piper:
            imap.pop_task(count)
            owners.pop()
        elif forced:
            imap.pop_task(True)
            owners.clear()
        else:
            return False
        if not owners:
            _TASKS.pop(id(imap), None)
        return True


def stop_imap(imap, **kwargs) -> None:
    """Stop an IMap that Pipers use, and forget the tasks they had added to it."""
    with _LOCK:
        _TASKS.pop(id(imap), None)
    if imap.started:
        imap.stop(**kwargs)
