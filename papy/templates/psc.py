"""A parameter sweep with the produce / spawn / consume idiom.

    problems --> [variants]  produce=n --> [evaluate]  spawn=n --> [best]  consume=n --> print
                 one problem -> n items    n lanes on an IMap      n results -> one

Each problem (here: find the cube root of t by gradient descent on x**4/4 - t*x) is split
into n variants, one per learning rate; each variant runs on its own lane of the pool; the
n results of a problem are combined into the rate that came closest (it depends on t: too
small a rate has not arrived after STEPS steps, too large a rate overshoots or diverges).
The rule that keeps the lanes in step: upstream ``produce x spawn`` = downstream
``consume x spawn`` (n x 1 = 1 x n here).

    python -m papy run papy/templates/psc.py                           # 6 targets, 6 rates
    python -m papy run papy/templates/psc.py --targets 1 2.5 10 --rates 0.05 0.3 0.6

Edit ``variants`` (what differs between lanes), ``evaluate`` (one lane's work) and
``best`` (how lanes combine). ``best`` receives ``consume`` inboxes: ``inbox[k][0]`` is
lane k's result.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from papy import IMap, Piper, Plumber, Worker, add_run_options, run_options, run_plumber

RATES = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
TARGETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STEPS = 20

Variant = tuple[float, float]                     # (target, rate)
Lane = tuple[float, float, float]                 # (target, rate, error)
Best = tuple[float, float, float, list[float]]    # (target, best rate, its error, all errors)

# -- 1. the functions (inbox convention) ------------------------------------------------


def variants(inbox: Sequence[float], rates: Sequence[float]) -> list[Variant]:
    """produce=len(rates): a target -> one (target, rate) variant per rate."""
    target = inbox[0]
    return [(target, rate) for rate in rates]


def evaluate(inbox: Sequence[Variant], steps: int = STEPS) -> Lane:
    """One lane: ``steps`` of gradient descent on x**4/4 - target*x from x = 0 ->
    (target, rate, error), the error being the distance to the cube root of target."""
    target, rate = inbox[0]
    x = 0.0
    for _ in range(steps):
        x -= rate * (x ** 3 - target)
        if abs(x) > 1e6:                        # diverged: stop early
            return target, rate, math.inf
    return target, rate, abs(x - math.copysign(abs(target) ** (1 / 3), target))


def best(inbox: Sequence[Sequence[Lane]]) -> Best:
    """consume=n: the n lanes of one target -> (target, best rate, its error, all errors)."""
    results = [group[0] for group in inbox]
    targets = {target for target, _, _ in results}
    if len(targets) != 1:       # the idiom keeps lanes of one input together: a bug if not
        raise ValueError(f"lanes out of step: targets {sorted(targets)}")
    target, rate, error = min(results, key=lambda r: (r[2], r[1]))
    return target, rate, error, [r[2] for r in results]


def show(inbox: Sequence[Best], out: TextIO) -> Best:
    """The output Piper: print one line per target."""
    target, rate, error, errors = inbox[0]
    text = " ".join(f"{x:<8.2g}" for x in errors)
    out.write(f"cube root of {target:<5g} best rate {rate:<5g} error {error:<8.2g} "
              f"(all: {text.rstrip()})\n")
    out.flush()
    return inbox[0]


# -- 2. the pipeline ---------------------------------------------------------------------


def pipeline(rates: Sequence[float] = RATES, imap: IMap[Any] | None = None,
             out: TextIO | None = None) -> Plumber:
    """variants (linear, produce=n) -> evaluate (on ``imap``, spawn=n) -> best (linear,
    consume=n) -> show. ``imap`` defaults to a process pool with a worker per CPU."""
    n = len(rates)
    imap = imap if imap is not None else IMap(worker_type="process")
    out = out if out is not None else sys.stdout
    splitter = Piper(Worker(variants, (tuple(rates),)), produce=n, name="variants")
    lanes = Piper(evaluate, parallel=imap, spawn=n, name="evaluate")
    combiner = Piper(best, consume=n, name="best")
    printer = Piper(Worker(show, (out,)), name="show")
    plumber = Plumber()
    plumber.add_pipe((splitter, lanes, combiner, printer))
    return plumber


def inputs() -> list[list[float]]:
    """The default problems (``papy run`` uses this when the module has no main)."""
    return [list(TARGETS)]


# -- 3. options, run ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="psc", description="Sweep learning rates over targets with produce/spawn/"
        "consume: each target is split into one variant per rate, the variants run on "
        "parallel lanes, the lanes are combined into the best rate.")
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS),
                        help="numbers whose cube roots to find")
    parser.add_argument("--rates", type=float, nargs="+", default=list(RATES),
                        help="learning rates to sweep (one lane each)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local workers (default: one per CPU)")
    parser.add_argument("--worker-type", choices=("process", "thread"), default="process")
    return add_run_options(parser, progress="log").parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    imap = IMap(worker_type=args.worker_type, worker_num=args.workers)
    return run_plumber(pipeline(args.rates, imap), [args.targets], **run_options(args))


if __name__ == "__main__":
    sys.exit(main())
