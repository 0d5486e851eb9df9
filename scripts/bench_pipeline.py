#!/usr/bin/env python
"""Benchmark: papy pipelines on 2 process workers against hand-written multiprocessing.

    chain (a)  x + 1, x * 2, x - 1: three Pipers, each on its own IMap
    chain (b)  the same three Pipers on one shared IMap
    fan-join   src -> (x + 1, x * 2) -> add: four Pipers on one shared IMap
    Pool       multiprocessing.Pool(2): imap of the composed function (chunksize 100 and the
               best of 100, 1000, 10000); for fan-join the hand-written
               map(add, pool.imap(f, xs, 1000), pool.imap(g, xs, 1000))
    Pool, the same calls   imap of the three inbox functions composed by hand,
               sub1([mul2([add1([x])])]), chunksize 10000: the calls papy makes per item,
               with no framework around them (a reference, not a target of issue 11)
    pypeln     pl.process.map x 3, workers=2 per stage (optional: --pypeln-n > 0)

Every rate is items/s, the median of --repeat runs, all measured in this one run (the
machine is shared: only ratios within one run mean something). ``--no-fuse`` adds the
papy cases with fusion off (every Piper its own IMap task). Then a memory check: an endless
input through three stages into a slow output, sampling the resident memory of this
process and its workers; it should stay flat (bounded by the run's window).

    python scripts/bench_pipeline.py                 # N = 200,000, 3 runs each
    python scripts/bench_pipeline.py --n 20000 --repeat 1 --memory-seconds 3
"""
from __future__ import annotations

import argparse
import functools
import itertools
import multiprocessing
import operator
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import total_rss_mib  # scripts/
from papy import IMap, Piper, Plumber


def add1(inbox: Sequence[int]) -> int:
    return inbox[0] + 1


def mul2(inbox: Sequence[int]) -> int:
    return inbox[0] * 2


def sub1(inbox: Sequence[int]) -> int:
    return inbox[0] - 1


def ident(inbox: Sequence[int]) -> int:
    return inbox[0]


def add(inbox: Sequence[int]) -> int:
    return inbox[0] + inbox[1]


def plain_add1(x: int) -> int:
    return x + 1


def plain_mul2(x: int) -> int:
    return x * 2


def plain_sub1(x: int) -> int:
    return x - 1


def composed(x: int) -> int:
    return (x + 1) * 2 - 1


def inbox_composed(x: int) -> int:
    """What papy calls per item of chain (b), composed by hand."""
    return sub1([mul2([add1([x])])])


def slow_print(inbox: Sequence[Any]) -> None:
    time.sleep(0.001)


def papy_chain(n: int, shared: bool, fuse: bool) -> float:
    """Seconds to push n items through the three stages, the output read by hand."""
    imaps = [IMap(worker_type="process", worker_num=2) for _ in range(1 if shared else 3)]
    stages = [Piper(f, parallel=imaps[0 if shared else k])
              for k, f in enumerate((add1, mul2, sub1))]
    plumber = Plumber()
    plumber.fuse = fuse
    plumber.add_pipe(tuple(stages))
    try:
        began = time.perf_counter()
        plumber.start([range(n)])
        total = sum(stages[-1])
        took = time.perf_counter() - began
        plumber.stop()
    finally:
        for imap in imaps:
            imap.stop()
    assert total == sum(composed(x) for x in range(n)), "wrong results"
    return took


def papy_fan_join(n: int, fuse: bool) -> float:
    imap = IMap(worker_type="process", worker_num=2)
    src = Piper(ident, parallel=imap)
    left, right = Piper(add1, parallel=imap, branch=1), Piper(mul2, parallel=imap, branch=2)
    join = Piper(add, parallel=imap)
    plumber = Plumber()
    plumber.fuse = fuse
    plumber.add_pipes([(src, left, join), (src, right, join)])
    try:
        began = time.perf_counter()
        plumber.start([range(n)])
        total = sum(join)
        took = time.perf_counter() - began
        plumber.stop()
    finally:
        imap.stop()
    assert total == sum(3 * x + 1 for x in range(n)), "wrong results"
    return took


def pool_chain(n: int, chunksize: int, func: Callable[[int], int] = composed) -> float:
    with multiprocessing.Pool(2) as pool:
        began = time.perf_counter()
        total = sum(pool.imap(func, range(n), chunksize=chunksize))
        took = time.perf_counter() - began
    assert total == sum(composed(x) for x in range(n)), "wrong results"
    return took


def pool_fan_join(n: int) -> float:
    with multiprocessing.Pool(2) as pool:
        began = time.perf_counter()
        xs = range(n)
        total = sum(map(operator.add, pool.imap(plain_add1, xs, 1000),
                        pool.imap(plain_mul2, xs, 1000)))
        took = time.perf_counter() - began
    assert total == sum(3 * x + 1 for x in range(n)), "wrong results"
    return took


def pypeln_run(n: int) -> float:
    import pypeln as pl
    began = time.perf_counter()
    stage = pl.process.map(plain_add1, range(n), workers=2)
    stage = pl.process.map(plain_mul2, stage, workers=2)
    stage = pl.process.map(plain_sub1, stage, workers=2)
    total = sum(stage)
    took = time.perf_counter() - began
    assert total == sum(composed(x) for x in range(n)), "wrong results"
    return took


def memory_check(seconds: float) -> None:
    imap = IMap(worker_type="process", worker_num=2)
    stages = [Piper(f, parallel=imap) for f in (add1, mul2, sub1)]
    output = Piper(slow_print)
    plumber = Plumber()
    plumber.add_pipe(tuple(stages) + (output,))
    plumber.plunge([itertools.count()])
    samples = []
    try:
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            time.sleep(seconds / 10)
            samples.append(total_rss_mib()[1])
    finally:
        plumber.chinkup()
        imap.stop()
    done = plumber.stats["pipers"][output].items_out
    warm = samples[len(samples) // 3:]
    growth = warm[-1] - warm[0]
    print(f"memory: endless input, slow output ({done} items in {seconds:.0f} s); RSS of "
          f"this process and its workers, MiB: {' '.join(f'{s:.0f}' for s in samples)}")
    print(f"memory: growth after warm-up {growth:+.1f} MiB -> "
          f"{'flat' if abs(growth) < 16 else 'NOT FLAT'}")


def median_rate(run: Callable[[], float], n: int, repeat: int) -> float:
    return n / statistics.median(run() for _ in range(repeat))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-seconds", type=float, default=10.0)
    parser.add_argument("--pypeln-n", type=int, default=0,
                        help="items for pypeln (about 1,000 items/s here; 0: skip it)")
    parser.add_argument("--no-fuse", action="store_true",
                        help="also measure the papy cases with fusion off")
    args = parser.parse_args(argv)
    n, repeat = args.n, args.repeat
    print(f"{n} items, 2 process workers, median of {repeat} runs, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}")
    rates: dict[str, float] = {}
    for chunksize in (100, 1000, 10000):
        rates[f"Pool.imap(composed, {chunksize})"] = median_rate(
            functools.partial(pool_chain, n, chunksize), n, repeat)
    rates["Pool.imap(inbox functions composed, 10000)"] = median_rate(
        functools.partial(pool_chain, n, 10000, inbox_composed), n, repeat)
    rates["hand-written fan-join (Pool.imap x 2, 1000)"] = median_rate(
        lambda: pool_fan_join(n), n, repeat)
    for fuse in (True, False) if args.no_fuse else (True,):
        tag = "" if fuse else ", unfused"
        rates[f"papy chain (a) IMap per stage{tag}"] = median_rate(
            functools.partial(papy_chain, n, False, fuse), n, repeat)
        rates[f"papy chain (b) one IMap{tag}"] = median_rate(
            functools.partial(papy_chain, n, True, fuse), n, repeat)
        rates[f"papy fan-join one IMap{tag}"] = median_rate(
            functools.partial(papy_fan_join, n, fuse), n, repeat)
    if args.pypeln_n:
        rates["pypeln process x 3"] = median_rate(lambda: pypeln_run(args.pypeln_n),
                                                  args.pypeln_n, repeat)
    for name, rate in rates.items():
        print(f"{name:48s} {rate:12,.0f} items/s")
    pool100 = rates["Pool.imap(composed, 100)"]
    best = max(rates[f"Pool.imap(composed, {c})"] for c in (100, 1000, 10000))
    hand = rates["hand-written fan-join (Pool.imap x 2, 1000)"]
    for fuse in (True, False) if args.no_fuse else (True,):
        tag = "" if fuse else ", unfused"
        a = rates[f"papy chain (a) IMap per stage{tag}"]
        b = rates[f"papy chain (b) one IMap{tag}"]
        fj = rates[f"papy fan-join one IMap{tag}"]
        print(f"chain (a){tag}: {a / pool100:.2f}x Pool.imap(100) (target >= 0.5)")
        print(f"chain (b){tag}: {b / pool100:.2f}x Pool.imap(100) (target >= 1.0), "
              f"{b / best:.2f}x the best chunksize (target >= 0.6)")
        same = rates["Pool.imap(inbox functions composed, 10000)"]
        print(f"chain (b){tag}: {b / same:.2f}x Pool.imap of the same three inbox functions "
              f"composed by hand (10000), which is {same / best:.2f}x the best chunksize")
        print(f"fan-join{tag}: {fj / hand:.2f}x the hand-written version (target >= 0.8)")
        if "pypeln process x 3" in rates:
            print(f"chain (b){tag}: {b / rates['pypeln process x 3']:.0f}x pypeln")
    if args.memory_seconds > 0:
        memory_check(args.memory_seconds)


if __name__ == "__main__":
    main()
