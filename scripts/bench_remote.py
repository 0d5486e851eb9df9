#!/usr/bin/env python
"""Remote workers against local processes: throughput of IMap on both, in one run.

    python scripts/bench_remote.py [--runs 5] [--items 200000] [--server HOST:PORT]

Two workloads, each on 2 remote worker slots (one forking ``imap.server`` on loopback,
started here unless --server is given) and on 2 local process workers:

    tiny   x + 1 over 200,000 ints          target: remote >= 200,000 items/s
    sleep  200 items that sleep 5 ms each   target: remote >= 0.9 x local

Each figure is the median of --runs runs, timed from IMap() to the last result (so worker
start-up and the function's shipping are included). The machine's noise shows in the
min..max range printed next to each median.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from imap import IMap  # noqa: E402


def plus_one(x: int) -> int:
    return x + 1


def sleep_5ms(x: int) -> int:
    time.sleep(0.005)
    return x


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "imap.server", "--port", "0", "--quiet"],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            cwd=ROOT, start_new_session=True)
    assert proc.stdout is not None  # stdout=PIPE
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line[len("listening on "):]


def stop_server(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def one_run(func: Callable[[int], int], n: int, pool: dict[str, Any]) -> float:
    """Items per second for ``func`` over range(n) on ``pool`` (IMap keyword arguments)."""
    started = time.perf_counter()
    imap = IMap(func, range(n), **pool)
    count = sum(1 for _ in imap)
    elapsed = time.perf_counter() - started
    imap.stop()
    assert count == n
    return n / elapsed


def measure(label: str, func: Callable[[int], int], n: int, pool: dict[str, Any],
            runs: int) -> float:
    rates = [one_run(func, n, pool) for _ in range(runs)]
    median = statistics.median(rates)
    print(f"  {label:34s} {median:12,.0f} items/s   (min {min(rates):,.0f} .. "
          f"max {max(rates):,.0f}, {runs} runs)", flush=True)
    return median


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--items", type=int, default=200_000, help="items of the tiny workload")
    parser.add_argument("--sleep-items", type=int, default=200)
    parser.add_argument("--server", help="use this running server (HOST:PORT) instead")
    args = parser.parse_args(argv)
    proc, address = (None, args.server) if args.server else start_server()
    remote: dict[str, Any] = dict(worker_num=0, worker_remote=[(address, 2)])
    local: dict[str, Any] = dict(worker_type="process", worker_num=2)
    try:
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, server {address}")
        print(f"tiny: x + 1 over {args.items:,} ints")
        tiny_remote = measure("2 remote slots (1 loopback server)", plus_one, args.items,
                              remote, args.runs)
        tiny_local = measure("2 local processes", plus_one, args.items, local, args.runs)
        print(f"sleep: {args.sleep_items} items of 5 ms")
        sleep_remote = measure("2 remote slots (1 loopback server)", sleep_5ms,
                               args.sleep_items, remote, args.runs)
        sleep_local = measure("2 local processes", sleep_5ms, args.sleep_items, local,
                              args.runs)
    finally:
        if proc is not None:
            stop_server(proc)
    ideal = 2 / 0.005
    print("summary")
    print(f"  tiny  remote {tiny_remote:,.0f} items/s (target >= 200,000: "
          f"{'met' if tiny_remote >= 200_000 else 'NOT met'}); remote/local = "
          f"{tiny_remote / tiny_local:.2f}")
    print(f"  sleep remote/local = {sleep_remote / sleep_local:.2f} (target >= 0.9: "
          f"{'met' if sleep_remote >= 0.9 * sleep_local else 'NOT met'}); remote at "
          f"{sleep_remote / ideal:.0%} of the ideal {ideal:,.0f} items/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
