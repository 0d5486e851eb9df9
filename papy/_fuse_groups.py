"""Which Pipers fuse: the groups of a graph that run as one call (papy._fuse).

``groups`` finds them for the plan of a run (papy._plan), before any node is made. A
group grows upstream from an *exit* (a parallel Piper not connected yet, with
``spawn == 1`` and no ``timeout``; it owns the IMap task): the largest set of Pipers on the
exit's IMap, each read only inside the set and with nothing for the parent to do after it
(``spawn == 1``, no ``timeout``, ``produce == 1``, no ``track``, no ``debug``). When that
set is not one head reading from outside and members that read only members with
``consume == 1`` (zipped), the group is the chain above the exit instead. A Reducer or a
Frame (``fusable = False``) is never in a group. See papy._fuse for what a fused group
does and what it gives.
"""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["groups", "Group"]

#: a fused group: its Pipers (the head first, the exit last), and the stages each reads
Group = tuple[tuple[Any, ...], tuple[tuple[int, ...], ...]]


def groups(order: list[Any], upstream: Callable[[Any], list[Any]],
           downstream: Callable[[Any], list[Any]]) -> dict[int, Group]:
    """``{id(exit): (members, stage inputs)}`` for every fused group of the graph (see the
    module docstring); members in ``order`` (topological: the head first, the exit last);
    ``upstream(p)``/``downstream(p)`` give a Piper's neighbours (upstream in join order).
    Groups are grown from the exits, downstream first."""
    found: dict[int, Group] = {}
    taken: set[int] = set()
    rank = {id(p): k for k, p in enumerate(order)}
    for exit_ in reversed(order):
        if id(exit_) in taken or not _may_exit(exit_):
            continue
        members = _grow(exit_, upstream, downstream, taken)
        if not _valid(members, upstream):
            members = _chain(exit_, upstream, downstream, taken)
        if len(members) < 2:
            continue
        pipers = tuple(sorted(members.values(), key=lambda p: rank[id(p)]))
        index = {id(p): k for k, p in enumerate(pipers)}
        inputs = tuple(() if k == 0 else tuple(index[id(u)] for u in upstream(p))
                       for k, p in enumerate(pipers))
        found[id(exit_)] = (pipers, inputs)
        taken.update(index)
    return found


def _may_exit(piper: Any) -> bool:
    return (piper.parallel is not False and not piper.connected and piper.spawn == 1
            and piper.timeout is None and piper.fusable)


def _absorbable(up: Any, imap: Any) -> bool:
    """``up`` can run inside a group on ``imap``: nothing for the parent to do after it."""
    return (up.parallel is imap and not up.connected and up.spawn == 1 and up.fusable
            and up.timeout is None and up.produce == 1 and not up.track and not up.debug)


def _grow(exit_: Any, upstream: Callable[[Any], list[Any]],
          downstream: Callable[[Any], list[Any]], taken: set[int]) -> dict[int, Any]:
    """The largest set above ``exit_`` whose members are read only inside the set."""
    members = {id(exit_): exit_}
    grew = True
    while grew:
        grew = False
        for piper in list(members.values()):
            for up in upstream(piper):
                if (id(up) not in members and id(up) not in taken
                        and _absorbable(up, exit_.parallel)
                        and all(id(d) in members for d in downstream(up))):
                    members[id(up)] = up
                    grew = True
    return members


def _valid(members: dict[int, Any], upstream: Callable[[Any], list[Any]]) -> bool:
    """One head, reading only from outside (any ``consume``); every other member reads
    only members, one inbox per item (``consume == 1``)."""
    heads = 0
    for piper in members.values():
        inside = [id(u) in members for u in upstream(piper)]
        if all(inside) and inside:
            if piper.consume != 1 or getattr(piper, "combine", "zip") != "zip":
                return False            # (a product's rows are made by its own node)
        elif any(inside):
            return False
        else:
            heads += 1
    return heads == 1


def _chain(exit_: Any, upstream: Callable[[Any], list[Any]],
           downstream: Callable[[Any], list[Any]], taken: set[int]) -> dict[int, Any]:
    """The chain ``p1 -> ... -> exit`` above ``exit_`` (each read only by the next)."""
    members = {id(exit_): exit_}
    piper = exit_
    while True:
        ups = upstream(piper)
        if len(ups) != 1 or piper.consume != 1:
            return members
        up = ups[0]
        if (id(up) in taken or not _absorbable(up, exit_.parallel)
                or len(downstream(up)) != 1):
            return members
        members[id(up)] = up
        piper = up
