"""What the benchmark and soak scripts share: timing an IMap and a multiprocessing pool, and the
resident memory of this process and every process under it (forkserver workers are
grandchildren: children of the fork server)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from multiprocessing.pool import Pool
from typing import Any, TypeVar

from imap import IMap

T = TypeVar("T")

PAGE = os.sysconf("SC_PAGE_SIZE")


def imap_seconds(func: Callable[[T], object], items: Sequence[T], warm: bool = True,
                 **settings: Any) -> float:
    """Seconds for an ``IMap(**settings)`` to give every result of ``func`` over ``items``,
    its workers started before the clock starts (``warm``: after a first run of 100 items,
    so that a pool's one-time costs, a fork server say, are paid)."""
    pool = IMap(**settings)
    if warm:
        first = pool.add_task(func, items[:100])
        pool.start()
        list(first)
        pool.stop()
    results = pool.add_task(func, items)
    pool.start()    # the workers start here, before the clock starts
    try:
        started = time.perf_counter()
        count = sum(1 for _ in results)
        elapsed = time.perf_counter() - started
    finally:
        pool.stop()
    assert count == len(items)
    return elapsed


def pool_seconds(pool: Pool, func: Callable[[T], object], items: Sequence[T],
                 chunksize: int) -> float:
    """Seconds for ``pool.imap(func, items, chunksize)`` to give every result."""
    started = time.perf_counter()
    count = sum(1 for _ in pool.imap(func, items, chunksize=chunksize))
    elapsed = time.perf_counter() - started
    assert count == len(items)
    return elapsed


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stat = handle.read()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(
                int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE / 2**20
    except OSError:
        return 0.0


def total_rss_mib() -> tuple[float, float]:
    """(RSS of this process, RSS of this process and all its descendants) in MiB."""
    me = os.getpid()
    own = rss_mib(me)
    return own, own + sum(rss_mib(pid) for pid in descendants(me))
