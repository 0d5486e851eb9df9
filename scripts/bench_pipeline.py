#!/usr/bin/env python
"""Benchmark: a 3-stage linear pipeline (x + 1, x * 2, x - 1) over N ints, 2 process workers.

    papy (a)   three Pipers, each on its own IMap(worker_type='process', worker_num=2)
    papy (b)   three Pipers on one shared IMap(worker_type='process', worker_num=2)
    pypeln     pl.process.map x 3, workers=2 per stage
    Pool.imap  multiprocessing.Pool(2).imap(composed, xs, chunksize=100)

Prints items/s (median of --repeat runs) and the ratios the papy issue sets as targets
(papy >= 10x pypeln, papy >= 0.3x the composed Pool.imap), then a memory check: an infinite
input through the same stages into a slow output, sampling the resident memory of this
process and its children; it should stay flat (bounded by the IMap buffers).

    python scripts/bench_pipeline.py                 # N = 100,000, 3 runs each
    python scripts/bench_pipeline.py --n 20000 --repeat 1 --memory-seconds 3

pypeln moves about a thousand items per second here, so it runs on --pypeln-n items
(default 10,000); rates are items per second either way.
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import total_rss_mib  # scripts/
from papy import IMap, Piper, Plumber


def add1(inbox: Sequence[int]) -> int:
    return inbox[0] + 1


def mul2(inbox: Sequence[int]) -> int:
    return inbox[0] * 2


def sub1(inbox: Sequence[int]) -> int:
    return inbox[0] - 1


def plain_add1(x: int) -> int:
    return x + 1


def plain_mul2(x: int) -> int:
    return x * 2


def plain_sub1(x: int) -> int:
    return x - 1


def composed(x: int) -> int:
    return (x + 1) * 2 - 1


def slow_print(inbox: Sequence[object]) -> None:
    time.sleep(0.001)


def expected_sum(n: int) -> int:
    return sum(composed(x) for x in range(n))


def papy_run(n: int, shared: bool) -> float:
    """Seconds to push n items through the three stages, outputs read by hand."""
    imaps = [IMap(worker_type="process", worker_num=2) for _ in range(1 if shared else 3)]
    stages = [Piper(f, parallel=imaps[0 if shared else k])
              for k, f in enumerate((add1, mul2, sub1))]
    plumber = Plumber()
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
    assert total == expected_sum(n), "wrong results"
    return took


def pypeln_run(n: int) -> float:
    import pypeln as pl  # the bench extra; untyped
    began = time.perf_counter()
    stage = pl.process.map(plain_add1, range(n), workers=2)
    stage = pl.process.map(plain_mul2, stage, workers=2)
    stage = pl.process.map(plain_sub1, stage, workers=2)
    total = sum(stage)
    took = time.perf_counter() - began
    assert total == expected_sum(n), "wrong results"
    return took


def pool_run(n: int) -> float:
    began = time.perf_counter()
    with multiprocessing.Pool(2) as pool:
        total = sum(pool.imap(composed, range(n), chunksize=100))
    took = time.perf_counter() - began
    assert total == expected_sum(n), "wrong results"
    return took


def memory_check(seconds: float) -> None:
    imap = IMap(worker_type="process", worker_num=2)
    stages = [Piper(f, parallel=imap) for f in (add1, mul2, sub1)]
    output = Piper(slow_print)
    plumber = Plumber()
    plumber.add_pipe(tuple(stages) + (output,))
    plumber.plunge([itertools.count()])
    samples: list[float] = []
    try:
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            time.sleep(seconds / 10)
            samples.append(total_rss_mib()[1])
    finally:
        plumber.chinkup()
    done = plumber.stats["pipers"][output].items_out
    warm = samples[len(samples) // 3:]
    growth = warm[-1] - warm[0]
    print(f"memory: infinite input, slow output ({done} items in {seconds:.0f} s); "
          f"RSS of this process and its workers, MiB: "
          f"{' '.join(f'{s:.0f}' for s in samples)}")
    print(f"memory: growth after warm-up {growth:+.1f} MiB -> "
          f"{'flat' if abs(growth) < 16 else 'NOT FLAT'}")


def median_rate(run: Callable[[], float], n: int, repeat: int) -> float:
    return n / statistics.median(run() for _ in range(repeat))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-seconds", type=float, default=10.0)
    parser.add_argument("--pypeln-n", type=int, default=10_000,
                        help="items for pypeln (about 1,000 items/s here: its rate is "
                             "measured on fewer items to keep the run short)")
    parser.add_argument("--skip-pypeln", action="store_true")
    args = parser.parse_args(argv)
    print(f"{args.n} items (pypeln: {args.pypeln_n}), 3 stages, 2 process workers, median "
          f"of {args.repeat} runs, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    rates = {"papy (a) own IMap per stage": median_rate(lambda: papy_run(args.n, False),
                                                        args.n, args.repeat),
             "papy (b) one shared IMap": median_rate(lambda: papy_run(args.n, True),
                                                     args.n, args.repeat),
             "Pool(2).imap(composed, chunksize=100)": median_rate(lambda: pool_run(args.n),
                                                                  args.n, args.repeat)}
    if not args.skip_pypeln:
        rates["pypeln process x 3"] = median_rate(lambda: pypeln_run(args.pypeln_n),
                                                  args.pypeln_n, args.repeat)
    for name, rate in rates.items():
        print(f"{name:40s} {rate:12,.0f} items/s")
    pool = rates["Pool(2).imap(composed, chunksize=100)"]
    for papy_name in ("papy (a) own IMap per stage", "papy (b) one shared IMap"):
        line = f"{papy_name}: {rates[papy_name] / pool:.2f}x Pool.imap (target >= 0.3)"
        if "pypeln process x 3" in rates:
            line += f", {rates[papy_name] / rates['pypeln process x 3']:.1f}x pypeln " \
                    f"(target >= 10)"
        print(line)
    if args.memory_seconds > 0:
        memory_check(args.memory_seconds)


if __name__ == "__main__":
    main()
