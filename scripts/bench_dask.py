"""Benchmark IMap on a Dask cluster against Dask's own ways, in one run; prints ratios.

    python scripts/bench_dask.py [--items 1000000] [--window-items 2000] [--repeat 3]

On one LocalCluster of 2 worker processes (1 thread each), each case timed --repeat times,
interleaved with its peers; medians are printed:

  x + 1 over --items ints
    IMap dask        IMap(worker_type='dask', worker_remote=client), defaults
    dask.bag         dask.bag.from_sequence(items).map(f).compute() (default partitions)
    submit window    a bounded window of per-item submit calls refilled from as_completed
                     (W = 4 per worker thread; timed on --window-items items and scaled)
    targets: IMap >= 1x the best of the two, and >= 20x the per-item submit window
  200 items sleeping 5 ms
    IMap dask vs IMap(worker_type='process', worker_num=2) (2 local processes)
    target: IMap dask >= 0.9x the throughput of the 2 local processes

Clusters, clients and pools are started and warmed up outside the timed part. With the
defaults the run takes about 10 minutes on a 2-core VM, nearly all of it in dask.bag: it
embeds the items in its task graph, and distributed walks that graph item by item
(dask._task_spec.convert_legacy_task), about 0.15 ms per item here.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from itertools import islice

import dask.bag
from distributed import Client, LocalCluster, as_completed

from _common import imap_seconds  # scripts/

WORKERS = 2
WINDOW_PER_THREAD = 4


def add1(x: int) -> int:
    return x + 1


def sleep5ms(x: int) -> int:
    time.sleep(0.005)
    return x


def time_bag(client: Client, func: Callable[[int], int], items: list[int]) -> float:
    started = time.perf_counter()
    bag = dask.bag.from_sequence(items)  # type: ignore[no-untyped-call]  # dask: not annotated
    results = bag.map(func).compute(scheduler=client.get)
    elapsed = time.perf_counter() - started
    assert len(results) == len(items)
    return elapsed


def time_window(client: Client, func: Callable[[int], int], items: list[int], window: int
                ) -> float:
    """The bounded window of per-item futures (dask/distributed#864), results re-ordered."""
    started = time.perf_counter()
    source = iter(enumerate(items))
    futures = {client.submit(func, x, pure=False): i for i, x in islice(source, window)}
    pending = as_completed(  # type: ignore[no-untyped-call]  # distributed: not annotated
        list(futures), with_results=True, loop=client.loop)
    done: dict[int, int] = {}
    for future, result in pending:
        done[futures.pop(future)] = result
        for i, x in islice(source, 1):
            future = client.submit(func, x, pure=False)
            futures[future] = i
            pending.add(future)  # type: ignore[no-untyped-call]  # distributed: not annotated
    results = [done[i] for i in range(len(items))]
    elapsed = time.perf_counter() - started
    assert len(results) == len(items)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--window-items", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="print every run's time")
    options = parser.parse_args(argv)
    items = list(range(options.items))
    window_items = items[:options.window_items]
    sleepers = list(range(200))
    runs: dict[str, list[float]] = {}

    def record(label: str, seconds: float) -> None:
        runs.setdefault(label, []).append(seconds)
        if options.verbose:
            print(f"  {label}: {seconds:.3f} s", file=sys.stderr)

    # distributed does not annotate LocalCluster and Client: hence the two ignores
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1,  # type: ignore[no-untyped-call]
                      processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        client.gather(client.map(add1, range(100), pure=False))     # warm up
        on_dask = {"worker_type": "dask", "worker_remote": client}
        for _ in range(options.repeat):
            record("IMap dask", imap_seconds(add1, items, **on_dask))
            record("dask.bag", time_bag(client, add1, items))
            record("submit window", time_window(client, add1, window_items,
                                                WINDOW_PER_THREAD * WORKERS)
                   * len(items) / len(window_items))
            record("sleep 5 ms: IMap dask", imap_seconds(sleep5ms, sleepers, **on_dask))
            record("sleep 5 ms: IMap 2 processes",
                   imap_seconds(sleep5ms, sleepers, worker_type="process", worker_num=WORKERS))

    median = {label: statistics.median(times) for label, times in runs.items()}
    print(f"python {sys.version.split()[0]}, LocalCluster of {WORKERS} worker processes x 1 "
          f"thread, {options.items} items (submit window: {len(window_items)} items, scaled), "
          f"median of {options.repeat} runs")
    print(f"{'case':30s} {'items/s':>12s} {'seconds':>9s}")
    for label in ("IMap dask", "dask.bag", "submit window"):
        print(f"{label:30s} {len(items) / median[label]:12,.0f} {median[label]:9.3f}")
    best = min(median["dask.bag"], median["submit window"])
    print(f"IMap dask / best of dask.bag and the window: {best / median['IMap dask']:6.2f}x "
          f"(target >= 1)")
    print(f"IMap dask / per-item submit window:          "
          f"{median['submit window'] / median['IMap dask']:6.2f}x (target >= 20)")
    for label in ("sleep 5 ms: IMap dask", "sleep 5 ms: IMap 2 processes"):
        print(f"{label:30s} {len(sleepers) / median[label]:12,.0f} {median[label]:9.3f}")
    ratio = median["sleep 5 ms: IMap 2 processes"] / median["sleep 5 ms: IMap dask"]
    print(f"sleep 5 ms: IMap dask / 2 local processes: {ratio:6.2f}x (target >= 0.9; ideal "
          f"{len(sleepers) * 0.005 / WORKERS:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
