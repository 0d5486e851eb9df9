"""Benchmark imap.Executor against concurrent.futures.ProcessPoolExecutor in one run.

    python scripts/bench_executor.py [--calls 20000] [--items 200000] [--repeat 5]

Cases (2 worker processes each, tiny calls: x + 1):
  submit: --calls futures submitted, then every result waited for
          imap.Executor.submit vs ProcessPoolExecutor.submit        (target: >= 1.0x)
  map:    --items items through map(), every result read
          imap.Executor.map (chunksize 1: batches adapt) vs
          ProcessPoolExecutor.map(chunksize=1000)                      (target: >= 2.0x)

Every case runs --repeat times, interleaved with its peer; medians are printed, with the
ratio (peer's seconds / ours: above 1 is faster). Executors are made and warmed up outside
the timed part. The machine this runs on should be quiet: the figures of record are the
lead's (docs/queues.md says where they are).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor as StdExecutor
from concurrent.futures import ProcessPoolExecutor, wait

import imap

WORKERS = 2


def add1(x: int) -> int:
    return x + 1


def time_submit(executor: StdExecutor, calls: int) -> float:
    started = time.perf_counter()
    futures = [executor.submit(add1, i) for i in range(calls)]
    wait(futures)
    elapsed = time.perf_counter() - started
    assert sum(f.result() for f in futures) == calls * (calls + 1) // 2
    return elapsed


def time_map(executor: StdExecutor, items: list[int], chunksize: int) -> float:
    started = time.perf_counter()
    count = sum(1 for _ in executor.map(add1, items, chunksize=chunksize))
    elapsed = time.perf_counter() - started
    assert count == len(items)
    return elapsed


def warm(executor: StdExecutor) -> StdExecutor:
    executor.submit(add1, 1).result()
    list(executor.map(add1, range(100)))
    return executor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args(argv)
    items = list(range(options.items))
    runs: dict[str, list[float]] = {}

    def record(label: str, measure: Callable[[], float]) -> None:
        runs.setdefault(label, []).append(measure())

    ours = warm(imap.Executor(max_workers=WORKERS))
    theirs = warm(ProcessPoolExecutor(max_workers=WORKERS))
    try:
        for _ in range(options.repeat):
            record("ProcessPoolExecutor.submit", lambda: time_submit(theirs, options.calls))
            record("imap.Executor.submit", lambda: time_submit(ours, options.calls))
            record("ProcessPoolExecutor.map chunksize=1000",
                   lambda: time_map(theirs, items, 1000))
            record("imap.Executor.map", lambda: time_map(ours, items, 1))
    finally:
        ours.shutdown()
        theirs.shutdown()

    median = {label: statistics.median(times) for label, times in runs.items()}
    print(f"python {sys.version.split()[0]}, {WORKERS} worker processes, {options.calls} "
          f"submitted calls, {options.items} mapped items, median of {options.repeat} runs")
    print(f"{'case':40s} {'calls/s':>12s} {'ratio':>7s}  target")
    rows = [("ProcessPoolExecutor.submit", None, options.calls, ""),
            ("imap.Executor.submit", "ProcessPoolExecutor.submit", options.calls, ">= 1.0"),
            ("ProcessPoolExecutor.map chunksize=1000", None, options.items, ""),
            ("imap.Executor.map", "ProcessPoolExecutor.map chunksize=1000", options.items,
             ">= 2.0")]
    for label, peer, count, target in rows:
        rate = count / median[label]
        ratio = f"{median[peer] / median[label]:7.2f}" if peer else " " * 7
        print(f"{label:40s} {rate:12,.0f} {ratio}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
