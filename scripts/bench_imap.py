"""Benchmark IMap against multiprocessing in one run; prints items/s and ratios.

    python scripts/bench_imap.py [--items 200000] [--repeat 5]

Cases (2 workers each):
  x + 1 over --items ints:   IMap processes (defaults, and stride=100)
                             vs multiprocessing.Pool(2).imap(chunksize=1 and 100)
                             IMap threads (defaults) vs ThreadPool(2).imap(chunksize=100)
  200 items sleeping 10 ms:  IMap processes and threads vs the ideal wall time (1.0 s)

Every case runs --repeat times, interleaved with its peers; medians are printed. Pools are
created and warmed up outside the timed part (as the peers' pools are).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from multiprocessing.pool import ThreadPool

from _common import pool_seconds  # scripts/
from imap import IMap

WORKERS = 2


def add1(x: int) -> int:
    return x + 1


def sleep10ms(x: int) -> int:
    time.sleep(0.01)
    return x


def time_imap(func: Callable[[int], int], items: list[int], **settings: object) -> float:
    pool = IMap(worker_num=WORKERS, **settings)
    warm = pool.add_task(func, range(100))
    pool.start()
    list(warm)
    pool.stop()
    results = pool.add_task(func, items)
    pool.start()  # workers start here; they are forked before the clock starts
    try:
        started = time.perf_counter()
        count = sum(1 for _ in results)
        elapsed = time.perf_counter() - started
    finally:
        pool.stop()
    assert count == len(items)
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args(argv)
    items = list(range(options.items))
    sleepers = list(range(200))
    runs: dict[str, list[float]] = {}

    def record(label: str, seconds: float) -> None:
        runs.setdefault(label, []).append(seconds)

    process_pool = get_context("fork").Pool(WORKERS)
    thread_pool = ThreadPool(WORKERS)
    process_pool.map(add1, range(100))
    thread_pool.map(add1, range(100))
    try:
        for _ in range(options.repeat):
            record("Pool.imap chunksize=1", pool_seconds(process_pool, add1, items[:20_000], 1)
                   * len(items) / 20_000)
            record("Pool.imap chunksize=100", pool_seconds(process_pool, add1, items, 100))
            record("IMap process, defaults", time_imap(add1, items))
            record("IMap process, stride=100", time_imap(add1, items, stride=100))
            record("ThreadPool.imap chunksize=100", pool_seconds(thread_pool, add1, items, 100))
            record("IMap thread, defaults", time_imap(add1, items, worker_type="thread"))
            record("sleep 10 ms: IMap process", time_imap(sleep10ms, sleepers))
            record("sleep 10 ms: IMap thread",
                   time_imap(sleep10ms, sleepers, worker_type="thread"))
    finally:
        process_pool.terminate()
        thread_pool.terminate()
        process_pool.join()
        thread_pool.join()

    median = {label: statistics.median(times) for label, times in runs.items()}
    print(f"python {sys.version.split()[0]}, {WORKERS} workers, {options.items} items, "
          f"median of {options.repeat} runs")
    print(f"{'case':34s} {'items/s':>12s} {'ratio':>8s}  vs")
    rows = [
        ("Pool.imap chunksize=1", None),
        ("Pool.imap chunksize=100", None),
        ("IMap process, defaults", "Pool.imap chunksize=100"),
        ("IMap process, stride=100", "Pool.imap chunksize=100"),
        ("ThreadPool.imap chunksize=100", None),
        ("IMap thread, defaults", "ThreadPool.imap chunksize=100"),
    ]
    for label, peer in rows:
        rate = len(items) / median[label]
        ratio = f"{median[peer] / median[label]:8.2f}  {peer}" if peer else ""
        print(f"{label:34s} {rate:12,.0f} {ratio}")
    ideal = len(sleepers) * 0.01 / WORKERS
    for label in ("sleep 10 ms: IMap process", "sleep 10 ms: IMap thread"):
        print(f"{label:34s} {median[label]:10.3f} s {median[label] / ideal:8.2f}  x ideal "
              f"({ideal:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
