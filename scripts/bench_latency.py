"""Latency of live streams: the time from an item's source to the output of a pipeline.

    python scripts/bench_latency.py [--lines 200] [--items 200] [--bulk 200000] [--repeat 3]
                                    [--polling]

Cases (2 worker processes each), each against ``multiprocessing.Pool(2).imap(chunksize=1)``
reading the same source in the same run:

  file  a line appended to a followed file (``load_file(follow=True)``) until it is written
        to the output of the grep template's pipeline (one stage on a process IMap with the
        default stride, then the linear ``write``); the Pool maps the template's matching
        test over the same generator. One line every --gap seconds (20 ms), so that each
        line is measured alone (a burst would measure throughput).
  gen   an item yielded by a generator that yields every --period seconds (10 ms) until it
        leaves a one-stage process pipeline (identity on the IMap, a linear recorder).
  bulk  --bulk lines already in a file, read to the end (``follow=False``) and followed
        (``follow=True``), through the grep template at the default stride: lines/s from
        the first output to the last (worker start-up left out); Pool.imap(chunksize=100)
        on the same lines, for scale. Live streams must not cost bulk input anything.

Before the timed items, warm-up items go through until the first one comes out (workers
started, code imported); they are not counted. Every case runs --repeat times, the cases
interleaved; printed per run: p50 / p95 / max in ms; then the medians over the runs and the
median of the per-run ratios p50(papy) / p50(Pool). Targets (issue 17, item 4): file p50
under 5 ms and p95 under 20 ms; gen p50 at most 2x the Pool's. ``--polling`` makes inotify
unavailable, so that the followed file is read as where the kernel cannot tell (and as
before inotify: a look every 0.1 s), for both papy and the Pool.
"""
from __future__ import annotations

import argparse
import errno
import itertools
import math
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import get_context
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any, NoReturn

from papy import IMap, Piper, Plumber
from papy.cli import TEMPLATES_DIR, load_module
from papy.workers import _follow
from papy.workers.io import load_file

WORKERS = 2
DEADLINE = 120.0            # seconds for the items of one run to come out (a hang guard)
PATTERN = "papy"
END = "papy end\n"          # ends the Pool's input (a Plumber is stopped instead)
WARM = -1                   # the sequence number of warm-up items

grep_template = load_module(TEMPLATES_DIR / "grep.py")


# -- what the workers run ------------------------------------------------------------------
def matching(line: str) -> str | None:
    """The template's grep for Pool.imap (one argument instead of an inbox)."""
    return line if re.search(PATTERN, line) else None


def passed(inbox: list[Any]) -> Any:
    return inbox[0]


def identity(item: Any) -> Any:
    return item


def no_inotify() -> NoReturn:
    raise OSError(errno.ENOSYS, "bench_latency --polling")


# -- recording -----------------------------------------------------------------------------
class Arrivals:
    """When each timed item came out (perf_counter), and an event at the first warm-up."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.times: dict[int, float] = {}
        self.warm = threading.Event()
        self.done = threading.Event()

    def arrived(self, seq: int) -> None:
        now = time.perf_counter()
        if seq == WARM:
            self.warm.set()
            return
        self.times[seq] = now
        if len(self.times) == self.expected:
            self.done.set()

    def wait(self) -> None:
        if not self.done.wait(DEADLINE):
            raise SystemExit(f"bench_latency: {len(self.times)} of {self.expected} items "
                             f"came out in {DEADLINE:.0f} s")


class LineOut:
    """The grep template's ``out``: a line is written (the template's output) = arrived."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals

    def write(self, text: str) -> None:
        if text != END:         # the Pool's end marker matches too; not a timed line
            self.arrivals.arrived(line_seq(text))

    def flush(self) -> None:
        pass


def line_seq(text: str) -> int:
    word = text.split()[1]
    return WARM if word == "warm" else int(word)


def latencies_ms(sent: dict[int, float], arrivals: Arrivals) -> list[float]:
    return [(arrivals.times[seq] - sent[seq]) * 1000 for seq in sorted(sent)]


def summary(values: list[float]) -> tuple[float, float, float]:
    """(p50, p95, max) of ``values``."""
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return statistics.median(ordered), p95, ordered[-1]


# -- case file: a followed file ------------------------------------------------------------
class Writer:
    """Appends warm-up lines until ``arrivals.warm``, then ``count`` timed lines, one every
    ``gap`` seconds (``sent``: when each was written), then END."""

    def __init__(self, path: Path, count: int, gap: float, arrivals: Arrivals) -> None:
        self.path, self.count, self.gap, self.arrivals = path, count, gap, arrivals
        self.sent: dict[int, float] = {}
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._write, name="bench-writer")

    def _write(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            while not self.arrivals.warm.wait(self.gap):
                os.write(fd, b"papy warm\n")
            for seq in range(self.count):
                time.sleep(self.gap)
                line = f"papy {seq} {'x' * 60}\n".encode()
                self.sent[seq] = time.perf_counter()
                os.write(fd, line)
            self.arrivals.wait()
            os.write(fd, END.encode())
        except BaseException as exc:  # noqa: BLE001 - raised again by join()
            self.failure = exc
        finally:
            os.close(fd)

    def join(self) -> None:
        self.thread.join()
        if self.failure is not None:
            raise self.failure


def file_papy(folder: Path, count: int, gap: float) -> list[float]:
    path = folder / "followed.log"
    path.write_text("")
    arrivals = Arrivals(count)
    plumber = grep_template.pipeline(PATTERN, IMap(worker_type="process",
                                                   worker_num=WORKERS), LineOut(arrivals))
    with open(path, encoding="utf-8") as handle:
        plumber.set_inputs([load_file(handle, follow=True)])
        plumber.plunge()
        writer = Writer(path, count, gap, arrivals)
        writer.thread.start()
        try:
            writer.join()
        finally:
            plumber.chinkup()
    return latencies_ms(writer.sent, arrivals)


def file_pool(pool: Pool, folder: Path, count: int, gap: float) -> list[float]:
    path = folder / "followed-pool.log"
    path.write_text("")
    arrivals = Arrivals(count)
    with open(path, encoding="utf-8") as handle:
        lines = itertools.takewhile(lambda line: line != END,
                                    load_file(handle, follow=True))
        writer = Writer(path, count, gap, arrivals)
        writer.thread.start()
        for line in pool.imap(matching, lines, chunksize=1):
            if line is not None:
                arrivals.arrived(line_seq(line))
        writer.join()
    return latencies_ms(writer.sent, arrivals)


# -- case gen: a slow generator ------------------------------------------------------------
def ticking(count: int, period: float, arrivals: Arrivals,
            sent: dict[int, float]) -> Iterator[tuple[int, float]]:
    """Warm-up items until the first came out, then ``count`` items, one every ``period``
    seconds; ``sent``: when each was yielded."""
    while not arrivals.warm.is_set():
        time.sleep(period)
        yield WARM, time.perf_counter()
    for seq in range(count):
        time.sleep(period)
        sent[seq] = time.perf_counter()
        yield seq, sent[seq]


def gen_papy(count: int, period: float) -> list[float]:
    arrivals, sent = Arrivals(count), dict[int, float]()

    def record(inbox: list[Any]) -> None:
        arrivals.arrived(inbox[0][0])

    plumber = Plumber()
    plumber.add_pipe((Piper(passed, parallel=IMap(worker_type="process", worker_num=WORKERS),
                            name="identity"), Piper(record, name="record")))
    plumber.start([ticking(count, period, arrivals, sent)])
    plumber.run()
    try:
        plumber.wait(DEADLINE)
        arrivals.wait()
    finally:
        plumber.pause()
        plumber.stop()
    return latencies_ms(sent, arrivals)


def gen_pool(pool: Pool, count: int, period: float) -> list[float]:
    arrivals, sent = Arrivals(count), dict[int, float]()
    for seq, _ in pool.imap(identity, ticking(count, period, arrivals, sent), chunksize=1):
        arrivals.arrived(seq)
    return latencies_ms(sent, arrivals)


# -- case bulk: lines already there --------------------------------------------------------
class Counter:
    """The grep template's ``out`` for bulk runs: counts lines, times the first and last."""

    def __init__(self, expected: int) -> None:
        self.expected, self.count = expected, 0
        self.first = self.last = 0.0
        self.done = threading.Event()

    def write(self, text: str) -> None:
        self.last = time.perf_counter()
        if self.count == 0:
            self.first = self.last
        self.count += 1
        if self.count == self.expected:
            self.done.set()

    def flush(self) -> None:
        pass

    def rate(self) -> float:
        return (self.count - 1) / (self.last - self.first)


def write_bulk(path: Path, count: int) -> int:
    """``count`` lines, every other one matching; how many match."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{'papy' if n % 2 else 'else'} line {n} of the bulk file\n"
                          for n in range(count))
    return count // 2


def bulk_papy(path: Path, matches: int, follow: bool) -> float:
    out = Counter(matches)
    plumber = grep_template.pipeline(PATTERN, IMap(worker_type="process",
                                                   worker_num=WORKERS), out)
    with open(path, encoding="utf-8") as handle:
        plumber.set_inputs([load_file(handle, follow=follow)])
        plumber.plunge()
        try:
            if not out.done.wait(DEADLINE):
                raise SystemExit(f"bench_latency: bulk: {out.count} of {matches} lines")
        finally:
            plumber.chinkup()
    return out.rate()


def bulk_pool(pool: Pool, path: Path, matches: int) -> float:
    out = Counter(matches)
    with open(path, encoding="utf-8") as handle:
        for line in pool.imap(matching, load_file(handle), chunksize=100):
            if line is not None:
                out.write(line)
    return out.rate()


# -- the runs ------------------------------------------------------------------------------
def show_run(label: str, values: list[float]) -> tuple[float, float, float]:
    p50, p95, top = summary(values)
    print(f"  {label:<34} p50 {p50:7.2f}  p95 {p95:7.2f}  max {top:7.2f} ms", flush=True)
    return p50, p95, top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200, help="timed lines per file run")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between lines")
    parser.add_argument("--items", type=int, default=200, help="timed items per gen run")
    parser.add_argument("--period", type=float, default=0.01, help="generator period (s)")
    parser.add_argument("--bulk", type=int, default=200_000, help="lines of the bulk file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--polling", action="store_true",
                        help="followed files polled every 0.1 s (as without inotify)")
    options = parser.parse_args(argv)
    if options.polling:
        setattr(_follow, "Inotify", no_inotify)  # noqa: B010 - replaces a module's name
    pool = get_context("fork").Pool(WORKERS)    # forked before this process has threads
    pool.map(identity, range(100))
    figures: dict[str, list[tuple[float, float, float]]] = {}
    rates: dict[str, list[float]] = {}
    cases: list[tuple[str, Callable[[], list[float]]]]
    try:
        with tempfile.TemporaryDirectory(prefix="papy-bench-latency-") as name:
            folder = Path(name)
            bulk_path = folder / "bulk.log"
            matches = write_bulk(bulk_path, options.bulk)
            cases = [
                ("file: papy grep (IMap process)",
                 lambda: file_papy(folder, options.lines, options.gap)),
                ("file: Pool.imap chunksize=1",
                 lambda: file_pool(pool, folder, options.lines, options.gap)),
                ("gen: papy 1 stage (IMap process)",
                 lambda: gen_papy(options.items, options.period)),
                ("gen: Pool.imap chunksize=1",
                 lambda: gen_pool(pool, options.items, options.period)),
            ]
            bulk_cases: list[tuple[str, Callable[[], float]]] = [
                ("bulk: papy grep, follow=False", lambda: bulk_papy(bulk_path, matches, False)),
                ("bulk: papy grep, follow=True", lambda: bulk_papy(bulk_path, matches, True)),
                ("bulk: Pool.imap chunksize=100", lambda: bulk_pool(pool, bulk_path, matches)),
            ]
            for run in range(1, options.repeat + 1):
                print(f"run {run} of {options.repeat}", flush=True)
                for label, case in cases:
                    figures.setdefault(label, []).append(show_run(label, case()))
                for label, bulk_case in bulk_cases:
                    rates.setdefault(label, []).append(bulk_case())
                    print(f"  {label:<34} {rates[label][-1]:11,.0f} lines/s", flush=True)
    finally:
        pool.terminate()
        pool.join()
    report(figures, rates, options)
    return 0


def report(figures: dict[str, list[tuple[float, float, float]]],
           rates: dict[str, list[float]], options: argparse.Namespace) -> None:
    print(f"\nmedians of {options.repeat} runs ({WORKERS} worker processes; file: "
          f"{options.lines} lines, one every {options.gap * 1000:.0f} ms"
          f"{', polled (no inotify)' if options.polling else ''}; gen: "
          f"{options.items} items, one every {options.period * 1000:.0f} ms):")
    for label, runs in figures.items():
        p50, p95, top = (statistics.median(run[i] for run in runs) for i in range(3))
        print(f"  {label:<34} p50 {p50:7.2f}  p95 {p95:7.2f}  max {top:7.2f} ms")
    for label, values in rates.items():
        print(f"  {label:<34} {statistics.median(values):11,.0f} lines/s")
    for case in ("file", "gen"):
        papy_runs = next(runs for label, runs in figures.items()
                         if label.startswith(f"{case}: papy"))
        pool_runs = next(runs for label, runs in figures.items()
                         if label.startswith(f"{case}: Pool"))
        ratio = statistics.median(ours[0] / theirs[0]
                                  for ours, theirs in zip(papy_runs, pool_runs, strict=True))
        print(f"  {case}: p50 papy / Pool.imap = {ratio:.1f}x")
    file_runs = next(runs for label, runs in figures.items() if label.startswith("file: papy"))
    p50, p95 = (statistics.median(run[i] for run in file_runs) for i in range(2))
    print(f"  targets: file p50 {p50:.2f} < 5 ms: {'met' if p50 < 5 else 'NOT met'}; "
          f"p95 {p95:.2f} < 20 ms: {'met' if p95 < 20 else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
