#!/usr/bin/env python
"""Benchmark: a sum-and-count Reducer on 2 process workers against multiprocessing.

    reducer    papy.Reducer(sum_count, parallel=IMap(process, 2)) over range(N): the items
               are folded in the workers (a fresh store per batch), the partial stores
               merged in the parent; timed from start() to the one result (pool start
               included)
    inline     the same fold through papy.inline's @w.reduce (job_stream's adapter: the
               fold is called once per item), for orientation
    Pool       sum(multiprocessing.Pool(2).imap(ident, range(N), chunksize=1000)), in the
               same run (pool start not included)

Target (issue 14): reducer at least 0.5x Pool. Rates are items/s, the median of --repeat
runs; only ratios within one run mean something (the machine is shared). Then a memory
check: an endless input into ``Reducer(..., every=W)`` for --memory-seconds, sampling the
resident memory of this process and its workers; it should stay flat.

    python scripts/bench_reduce.py                    # N = 1,000,000, 3 runs each
    python scripts/bench_reduce.py --n 100000 --repeat 1 --memory-seconds 2
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import total_rss_mib  # scripts/
from papy import IMap, Plumber, Reducer
from papy.inline import Work


def sum_count(store: Any, works: list[int], others: list[Any]) -> None:
    """Fold ints into (total, count); merge other stores."""
    if not hasattr(store, "total"):
        store.total, store.count = 0, 0
    store.total += sum(works)
    store.count += len(works)
    for other in others:
        if hasattr(other, "total"):
            store.total += other.total
            store.count += other.count


def ident(x: int) -> int:
    return x


def result(store: Any) -> tuple[int, int]:
    return store.total, store.count


def run_reducer(n: int) -> float:
    reducer = Reducer(sum_count, parallel=IMap(worker_type="process", worker_num=2),
                      emit=result)
    plumber = Plumber()
    plumber.add_piper(reducer)
    began = time.perf_counter()
    out = plumber.collect([range(n)])[reducer]
    took = time.perf_counter() - began
    assert out == [(n * (n - 1) // 2, n)], f"wrong result {out}"
    return took


def run_inline(n: int) -> float:
    w = Work(range(n), worker_type="process", worker_num=2)
    w.reduce(sum_count, emit=result)
    began = time.perf_counter()
    out = w.run()
    took = time.perf_counter() - began
    assert out == [(n * (n - 1) // 2, n)], f"wrong result {out}"
    return took


def run_pool(n: int) -> float:
    with multiprocessing.Pool(2) as pool:
        began = time.perf_counter()
        total = sum(pool.imap(ident, range(n), chunksize=1000))
        took = time.perf_counter() - began
    assert total == n * (n - 1) // 2, "wrong result"
    return took


def median_rate(run: Callable[[int], float], n: int, repeat: int) -> float:
    return n / statistics.median(run(n) for _ in range(repeat))


def memory(seconds: float, every: int) -> list[float]:
    """RSS samples (MiB) while an endless input runs into windows of ``every`` items."""
    reducer = Reducer(sum_count, parallel=IMap(worker_type="process", worker_num=2),
                      emit=result, every=every)
    plumber = Plumber()
    plumber.add_piper(reducer)
    samples: list[float] = []
    began = last = time.perf_counter()
    windows = 0
    for window in plumber.stream([itertools.count()]):
        windows += 1
        assert window[1] == every, window
        now = time.perf_counter()
        if now - last >= seconds / 10:
            samples.append(total_rss_mib()[1])      # this process and its workers
            last = now
        if now - began >= seconds:
            break
    print(f"memory: {windows} windows of {every:,} items in {seconds:.0f} s; RSS MiB "
          f"{', '.join(f'{s:.1f}' for s in samples)}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-seconds", type=float, default=5.0)
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--no-inline", action="store_true", help="skip the inline case")
    args = parser.parse_args()
    n, repeat = args.n, args.repeat
    pool = median_rate(run_pool, n, repeat)
    reducer = median_rate(run_reducer, n, repeat)
    print(f"N = {n:,}, median of {repeat}, 2 process workers")
    print(f"Pool.imap(chunksize=1000) + sum: {pool:12,.0f} items/s")
    print(f"papy Reducer (sum and count):    {reducer:12,.0f} items/s = {reducer / pool:.2f}x "
          f"Pool (target >= 0.5x)")
    if not args.no_inline:
        inline = median_rate(run_inline, n, repeat)
        print(f"papy.inline @w.reduce (per item): {inline:11,.0f} items/s = "
              f"{inline / pool:.2f}x Pool")
    if args.memory_seconds > 0:
        samples = memory(args.memory_seconds, args.every)
        if len(samples) >= 2:
            print(f"memory: first {samples[0]:.1f} MiB, last {samples[-1]:.1f} MiB "
                  f"({samples[-1] - samples[0]:+.1f} MiB)")


if __name__ == "__main__":
    main()
