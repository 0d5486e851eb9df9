"""Benchmark IMap against multiprocessing in one run; prints items/s and ratios.

    python scripts/bench_imap.py [--items 200000] [--repeat 5] [--startups 7]
    python scripts/bench_imap.py --only-startup      # the start-up figures alone

Cases (2 workers each):
  x + 1 over --items ints:   IMap processes (defaults, and stride=100)
                             vs multiprocessing.Pool(2).imap(chunksize=1 and 100)
                             IMap threads (defaults) vs ThreadPool(2).imap(chunksize=100)
  200 items sleeping 10 ms:  IMap processes and threads vs the ideal wall time (1.0 s)
  start-up:                  from constructing a pool to its first result, for the first
                             pool of a program (a new interpreter each time) and for the
                             next ones (3 more in the same program): IMap processes (default
                             start method: imap's fork server; and in a program that has a
                             thread: multiprocessing's forkserver) vs ProcessPoolExecutor(2)
                             and multiprocessing.Pool(2) (fork, their default on Linux)

Every case runs --repeat times (start-up: --startups programs), interleaved with its peers;
medians are printed. For throughput, pools are created and warmed up outside the timed
part (as the peers' pools are); the start-up figures time exactly that part. Imports happen
before the clock starts, for every library.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from multiprocessing import get_context
from multiprocessing.pool import ThreadPool

from _common import imap_seconds, pool_seconds  # scripts/
from imap import IMap

WORKERS = 2


def add1(x: int) -> int:
    return x + 1


def sleep10ms(x: int) -> int:
    time.sleep(0.01)
    return x


STARTUP_KINDS = {   # label: what the child program starts
    "IMap process (fork server)": "imap",
    "IMap process, program with a thread": "imap-threaded",
    "ProcessPoolExecutor(2)": "executor",
    "multiprocessing.Pool(2)": "pool",
}
LATER_POOLS = 3


def startup_child(kind: str) -> None:
    """In a new interpreter: seconds from constructing a pool to its first result, for the
    first pool of this program and LATER_POOLS more; printed as JSON."""
    import threading
    from concurrent.futures import ProcessPoolExecutor
    if kind == "imap-threaded":      # a program with a thread: multiprocessing's forkserver
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    seconds: list[float] = []
    for _ in range(1 + LATER_POOLS):
        started = time.perf_counter()
        if kind.startswith("imap"):
            pool = IMap(add1, range(10), worker_num=WORKERS)
            next(iter(pool))
            seconds.append(time.perf_counter() - started)
            pool.stop()
        elif kind == "executor":
            with ProcessPoolExecutor(WORKERS) as executor:
                executor.submit(add1, 1).result()
                seconds.append(time.perf_counter() - started)
        else:
            with get_context("fork").Pool(WORKERS) as mp_pool:
                mp_pool.apply(add1, (1,))
                seconds.append(time.perf_counter() - started)
    print(json.dumps(seconds))


def startup_figures(programs: int) -> None:
    """Run ``programs`` child programs of each kind, interleaved; print medians and ratios."""
    first: dict[str, list[float]] = {label: [] for label in STARTUP_KINDS}
    later: dict[str, list[float]] = {label: [] for label in STARTUP_KINDS}
    for _ in range(programs):
        for label, kind in STARTUP_KINDS.items():
            done = subprocess.run([sys.executable, __file__, "--startup-child", kind],
                                  capture_output=True, text=True, check=True)
            seconds = json.loads(done.stdout)
            first[label].append(seconds[0])
            later[label].extend(seconds[1:])
    peer = "ProcessPoolExecutor(2)"
    print(f"start-up, construction to first result, median of {programs} programs "
          f"(later: {LATER_POOLS} more pools in each)")
    print(f"{'pool':38s} {'first ms':>9s} {'ratio':>6s} {'later ms':>9s} {'ratio':>6s}  vs")
    for label in STARTUP_KINDS:
        one, more = statistics.median(first[label]), statistics.median(later[label])
        ratio_one = one / statistics.median(first[peer])
        ratio_more = more / statistics.median(later[peer])
        print(f"{label:38s} {one * 1e3:9.1f} {ratio_one:6.2f} {more * 1e3:9.1f} "
              f"{ratio_more:6.2f}  {peer}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--startups", type=int, default=7,
                        help="programs started per kind for the start-up figures (0: none)")
    parser.add_argument("--only-startup", action="store_true")
    parser.add_argument("--startup-child", choices=sorted(set(STARTUP_KINDS.values())),
                        help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.startup_child:
        startup_child(options.startup_child)
        return 0
    if options.only_startup:
        startup_figures(options.startups)
        return 0
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
            record("IMap process, defaults", imap_seconds(add1, items, worker_num=WORKERS))
            record("IMap process, stride=100",
                   imap_seconds(add1, items, worker_num=WORKERS, stride=100))
            record("ThreadPool.imap chunksize=100", pool_seconds(thread_pool, add1, items, 100))
            record("IMap thread, defaults",
                   imap_seconds(add1, items, worker_num=WORKERS, worker_type="thread"))
            record("sleep 10 ms: IMap process",
                   imap_seconds(sleep10ms, sleepers, worker_num=WORKERS))
            record("sleep 10 ms: IMap thread",
                   imap_seconds(sleep10ms, sleepers, worker_num=WORKERS,
                                worker_type="thread"))
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
    if options.startups:
        print()
        startup_figures(options.startups)
    return 0


if __name__ == "__main__":
    sys.exit(main())
