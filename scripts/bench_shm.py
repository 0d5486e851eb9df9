"""Large payloads: IMap's shared-memory transport vs its pipe vs multiprocessing.Pool.imap.

    python scripts/bench_shm.py [--items 24] [--mib 64] [--repeat 3]

Each case sends --items payloads of --mib MiB (bytes) through a 2-worker process pool:
  one way:    the worker returns len(payload)       (payload goes to the worker only)
  round trip: the worker returns the payload itself (payload goes there and back)
for IMap with the shared-memory transport (its default), the same IMap with shm_threshold=0
(everything pickled through the pipe), and multiprocessing.Pool(2).imap(chunksize=1).
Pool start-up is outside the clock for Pool; IMap's pool starts inside start(), also outside
the clock, but its first messages create the shared-memory segments inside it. Medians of
--repeat runs; the ratios compare IMap with shared memory against the other two.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from multiprocessing import get_context

from _common import imap_seconds, pool_seconds  # scripts/

WORKERS = 2


def size_of(payload: bytes) -> int:
    return len(payload)


def echo(payload: bytes) -> bytes:
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args(argv)
    payload = os.urandom(options.mib << 20)
    payloads = [payload] * options.items
    total = len(payloads) * len(payload)
    runs: dict[str, list[float]] = {}
    with get_context("fork").Pool(WORKERS) as pool:
        pool.map(size_of, [b"warm"] * 4)
        for _ in range(options.repeat):
            for name, func in (("one way", size_of), ("round trip", echo)):
                runs.setdefault(f"{name}: IMap shared memory", []).append(
                    imap_seconds(func, payloads, False, worker_num=WORKERS))
                runs.setdefault(f"{name}: IMap pipe", []).append(
                    imap_seconds(func, payloads, False, worker_num=WORKERS, shm_threshold=0))
                runs.setdefault(f"{name}: Pool.imap", []).append(
                    pool_seconds(pool, func, payloads, 1))
    print(f"python {sys.version.split()[0]}, {WORKERS} workers, {options.items} payloads of "
          f"{options.mib} MiB, median of {options.repeat} runs")
    for name in ("one way", "round trip"):
        shm = statistics.median(runs[f"{name}: IMap shared memory"])
        for case in ("IMap shared memory", "IMap pipe", "Pool.imap"):
            seconds = statistics.median(runs[f"{name}: {case}"])
            ratio = ("" if case == "IMap shared memory" else
                     f"  shared memory is {seconds / shm:.1f}x faster")
            print(f"{name + ': ' + case:32s} {total / seconds / 1e9:6.2f} GB/s "
                  f"{seconds:7.3f} s{ratio}")
    leftovers = [entry for entry in os.listdir("/dev/shm") if entry.startswith("imap_")]
    print(f"/dev/shm entries left: {leftovers or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
