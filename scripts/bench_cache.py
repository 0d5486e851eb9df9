#!/usr/bin/env python
"""Benchmark: papy's result cache on a 3-stage pipeline (issue 13).

    stage 1  x + 1      each Piper(f, parallel=imap, cache=cache) on one shared IMap
    stage 2  x * 2      (process workers by default); every stage sleeps --work-ms
    stage 3  x - 1      per item, as a function of ~1 ms would take

Runs, each over the same --n items:

    first      an empty cache: every item computed and stored
    cached     the same run again: every item read from the cache
               (target: at least 20x faster than "first" for 1 ms per item)
    changed    stage 2 replaced by other code with the same results: stage 2 computes
               again, stages 1 and 3 are hits (stage 3's inputs did not change)
    tiny       the cache's overhead on a first run of functions that do nothing:
               (cached first run - uncached run) / uncached run (target: under 25%),
               the medians of --repeat runs of each, interleaved (a new cache each time)

Prints seconds, items/s, the cache's hits and misses per run, and the two ratios.

    python scripts/bench_cache.py                       # N = 100,000, 1 ms per item
    python scripts/bench_cache.py --n 300 --tiny-n 2000 --work-ms 1   # a quick check
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from papy import Cache, IMap, Piper, Plumber, Worker

Stage = Callable[..., Any]


def work(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def add1(inbox: list[int], seconds: float = 0.0) -> int:
    work(seconds)
    return inbox[0] + 1


def mul2(inbox: list[int], seconds: float = 0.0) -> int:
    work(seconds)
    return inbox[0] * 2


def mul2_changed(inbox: list[int], seconds: float = 0.0) -> int:
    """Other code, the same results as mul2: a changed function."""
    work(seconds)
    return inbox[0] + inbox[0]


def sub1(inbox: list[int], seconds: float = 0.0) -> int:
    work(seconds)
    return inbox[0] - 1


def expected_sum(n: int) -> int:
    return sum((x + 1) * 2 - 1 for x in range(n))


def run_pipeline(stages: list[Stage], n: int, seconds: float, cache: Cache | None,
                 options: dict[str, Any]) -> float:
    """Seconds for n items through the stages (each a Piper on one shared IMap)."""
    imap = IMap(**options)
    pipers = [Piper(Worker(f, (), {"seconds": seconds}), parallel=imap, cache=cache,
                    name=f"{k}-{f.__name__}") for k, f in enumerate(stages)]
    plumber = Plumber()
    plumber.add_pipe(tuple(pipers))
    try:
        began = time.perf_counter()
        plumber.start([range(n)])
        total = sum(pipers[-1])
        took = time.perf_counter() - began
        plumber.stop()
    finally:
        imap.stop()
    assert total == expected_sum(n), f"wrong results: {total} != {expected_sum(n)}"
    return took


def report(label: str, n: int, seconds: float, cache: Cache | None) -> None:
    counts = ""
    if cache is not None:
        stats = cache.stats(reset=True)
        counts = (f"  hits {stats['hits']:>8}  misses {stats['misses']:>8}  "
                  f"stored {stats['bytes'] / 2**20:7.1f} MiB")
    print(f"{label:<44} {seconds:8.2f} s {n / seconds:>10.0f} items/s{counts}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="items per run")
    parser.add_argument("--work-ms", type=float, default=1.0, help="ms per item per stage")
    parser.add_argument("--tiny-n", type=int, default=100_000, help="items of the tiny run")
    parser.add_argument("--repeat", type=int, default=11,
                        help="runs of the tiny comparison (the median of each is kept)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-type", default="process", choices=("process", "thread"))
    parser.add_argument("--root", help="cache folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    options = {"worker_type": args.worker_type, "worker_num": args.workers}
    seconds = args.work_ms / 1000
    root = args.root or tempfile.mkdtemp(prefix="papy-bench-cache-")
    print(f"bench_cache: {args.n} items, 3 stages, {args.work_ms} ms per item per stage, "
          f"{args.workers} {args.worker_type} workers, cache in {root}")
    try:
        cache = Cache(os.path.join(root, "pipeline"))
        first = run_pipeline([add1, mul2, sub1], args.n, seconds, cache, options)
        report("first run (empty cache)", args.n, first, cache)
        cached = run_pipeline([add1, mul2, sub1], args.n, seconds, cache, options)
        report("cached rerun", args.n, cached, cache)
        changed = run_pipeline([add1, mul2_changed, sub1], args.n, seconds, cache, options)
        report("rerun, stage 2 changed", args.n, changed, cache)

        plains, tinies = [], []
        for attempt in range(args.repeat):      # interleaved: a shared machine's noise
            plains.append(run_pipeline([add1, mul2, sub1], args.tiny_n, 0.0, None, options))
            tiny_cache = Cache(os.path.join(root, f"tiny-{attempt}"))     # empty each time
            tinies.append(run_pipeline([add1, mul2, sub1], args.tiny_n, 0.0, tiny_cache,
                                       options))
        plain, tiny = statistics.median(plains), statistics.median(tinies)
        report(f"tiny items, no cache (median of {args.repeat})", args.tiny_n, plain, None)
        report(f"tiny items, first cached run (median of {args.repeat})", args.tiny_n, tiny,
               tiny_cache)
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    speedup, overhead = first / cached, (tiny - plain) / plain
    print(f"cached rerun: {speedup:.1f}x faster than the first run (target >= 20x): "
          f"{'ok' if speedup >= 20 else 'MISSED'}")
    print(f"rerun after one change: {changed / first:.2f} of the first run's time "
          f"(one stage of three computes again)")
    print(f"overhead on tiny items: {overhead:+.0%} (target < 25%): "
          f"{'ok' if overhead < 0.25 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
