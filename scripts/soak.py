#!/usr/bin/env python
"""Soak test: many items through a pipeline with a fan-out and a join, memory watched.

    range(N) -> A: x + 1 -> B: x * 2 (branch 1) -> D: b + c   (join; read by this script)
                         \\-> C: x * 3 (branch 2) -/

A and D run on one process IMap, B and C on another (2 workers each). The script reads
D itself, checks the count (N) and a checksum (sum of D = 5 * (sum of x + N), and a
position-weighted sum that also catches reordering), and samples the resident memory (RSS,
from /proc) of this process plus all its children every --sample items. Growth = peak total
RSS minus the total after the first --warmup items (pools started, buffers filled).

Mode --infinite: itertools.count() as the input and a slow reader (--delay seconds per
item) for --seconds; the RSS must stay flat (bounded by the run's window), with or without
a worker killed every --kill-every seconds; the graceful stop at the end is timed (it
drains at most the window).

    python scripts/soak.py                     # 1,000,000 items, then 20 s of infinite input
    python scripts/soak.py --quick             # 50,000 items, 3 s infinite
    python scripts/soak.py --items 200000 --no-infinite

Exit code 0 when the count and checksum match and the growth is under --limit-mb (50).
"""
from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import total_rss_mib  # scripts/
from papy import IMap, Piper, Plumber



def add1(inbox: Sequence[int]) -> int:
    return inbox[0] + 1


def mul2(inbox: Sequence[int]) -> int:
    return inbox[0] * 2


def mul3(inbox: Sequence[int]) -> int:
    return inbox[0] * 3


def join_sum(inbox: Sequence[int]) -> int:
    return inbox[0] + inbox[1]


def build(stride: int) -> tuple[Plumber, Piper, tuple[IMap[Any], IMap[Any]]]:
    outer = IMap(worker_type="process", worker_num=2, stride=stride)
    inner = IMap(worker_type="process", worker_num=2, stride=stride)
    a = Piper(add1, parallel=outer, name="A")
    b = Piper(mul2, parallel=inner, name="B", branch=1)
    c = Piper(mul3, parallel=inner, name="C", branch=2)
    d = Piper(join_sum, parallel=outer, name="D")
    plumber = Plumber()
    plumber.add_pipes([(a, b, d), (a, c, d)])
    return plumber, d, (outer, inner)


class Memory:
    def __init__(self) -> None:
        self.base: tuple[float, float] | None = None
        self.peak_parent = self.peak_total = 0.0

    def sample(self, warm: bool) -> None:
        parent, total = total_rss_mib()
        if not warm:
            return
        if self.base is None:
            self.base = (parent, total)
        self.peak_parent = max(self.peak_parent, parent)
        self.peak_total = max(self.peak_total, total)

    def report(self, label: str) -> float:
        base_parent, base_total = self.base or total_rss_mib()
        growth = self.peak_total - base_total
        print(f"{label}: RSS parent {base_parent:.1f} -> peak {self.peak_parent:.1f} MiB, "
              f"parent + workers {base_total:.1f} -> peak {self.peak_total:.1f} MiB, "
              f"growth {growth:+.1f} MiB", flush=True)
        return growth


def soak(items: int, stride: int, warmup: int, every: int) -> tuple[bool, float]:
    plumber, output, _ = build(stride)
    memory = Memory()
    count = total = weighted = 0
    began = time.perf_counter()
    plumber.start([range(items)])
    try:
        for count, value in enumerate(output, 1):
            total += value
            weighted = (weighted + count * value) % (1 << 61)
            if count % every == 0 or count == warmup:
                memory.sample(count >= warmup)
    finally:
        plumber.stop()
    took = time.perf_counter() - began
    # D(x) = 2(x + 1) + 3(x + 1) = 5(x + 1)
    want_total = 5 * (items * (items - 1) // 2 + items)
    want_weighted = sum((i + 1) * 5 * (i + 1) for i in range(items)) % (1 << 61)
    ok = count == items and total == want_total and weighted == want_weighted
    print(f"{items:,} items in {took:.1f} s ({items / took:,.0f} items/s): count {count:,} "
          f"(want {items:,}), checksum {'ok' if ok else 'WRONG'}", flush=True)
    return ok, memory.report("soak")


def _kill_a_worker() -> None:
    """SIGKILL one worker process of this program (a child of the fork server)."""
    from _common import descendants
    workers = [pid for pid in descendants(os.getpid())
               if pid not in set(_children_of(os.getpid()))]
    if workers:
        os.kill(workers[-1], signal.SIGKILL)


def _children_of(pid: int) -> list[int]:
    from _common import descendants
    return [child for child in descendants(pid)
            if _parent_of(child) == pid]


def _parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return -1
    return int(stat[stat.rfind(")") + 2:].split()[1])


def infinite(seconds: float, delay: float, stride: int, every: int,
             kill_every: float | None = None) -> float:
    plumber, output, _ = build(stride)
    memory = Memory()
    plumber.start([itertools.count()])
    end: float | None = None
    warm_at: float | None = None
    next_kill: float | None = None
    count = kills = 0
    samples: list[tuple[float, float]] = []
    try:
        for count, _value in enumerate(output, 1):
            time.sleep(delay)
            now = time.monotonic()
            if warm_at is None and count >= every:
                warm_at, end = now, now + seconds
                next_kill = now + kill_every if kill_every else None
            if count % every == 0:
                memory.sample(warm_at is not None)
                if warm_at is not None and (not samples or now - samples[-1][0] >= 30):
                    samples.append((now, total_rss_mib()[1]))
            if next_kill is not None and now >= next_kill:
                _kill_a_worker()
                kills += 1
                next_kill = now + (kill_every or 0)
            if end is not None and now > end:
                break
    finally:
        stopping = time.perf_counter()
        plumber.stop()
        stopped = time.perf_counter() - stopping
    if samples:
        began = samples[0][0]
        print("infinite: RSS of this process and its workers every ~30 s, MiB: "
              + " ".join(f"{t - began:.0f}s:{mib:.0f}" for t, mib in samples), flush=True)
    print(f"infinite input, slow reader ({delay * 1000:g} ms/item): {count:,} items "
          f"read in {seconds:g} s after warm-up; {kills} workers killed; the graceful stop "
          f"took {stopped:.2f} s", flush=True)
    return memory.report("infinite")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 items, 3 s infinite")
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--limit-mb", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="infinite mode length")
    parser.add_argument("--delay", type=float, default=0.001, help="infinite reader delay")
    parser.add_argument("--no-infinite", action="store_true")
    parser.add_argument("--infinite-only", action="store_true")
    parser.add_argument("--kill-every", type=float, default=None, metavar="SECONDS",
                        help="infinite mode: SIGKILL one worker process every SECONDS")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.seconds = min(args.items, 50_000), min(args.seconds, 3.0)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, stride {args.stride}, "
          f"2 + 2 process workers", flush=True)
    ok = True
    if not args.infinite_only:
        warmup = min(20_000, args.items // 10)
        every = max(1, min(10_000, args.items // 100))
        matched, growth = soak(args.items, args.stride, warmup, every)
        ok = matched and growth < args.limit_mb
    if not args.no_infinite:
        growth = infinite(args.seconds, args.delay, args.stride, 500, args.kill_every)
        ok = ok and growth < args.limit_mb
    print("PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
