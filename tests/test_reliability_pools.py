"""What the pools promise under hostile use (issue 18): settings, exceptions of any kind,
fork servers that die, broken pools. Scripts run in subprocesses are in
test_reliability_scripts.py."""
from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time

import pytest

from imap import BrokenPoolError, IMap, WorkerDiedError, WorkerStartError, _config

DEADLINE = 30.0


# -- one validator for every number of seconds (18.5) -----------------------------------

@pytest.mark.parametrize("value, error", [
    (float("nan"), ValueError), (-1, ValueError), (-0.5, ValueError), ("5", TypeError),
    (True, TypeError), ([1], TypeError), (float("-inf"), ValueError),
])
def test_seconds_refuses_nan_negatives_and_non_numbers(value, error):
    with pytest.raises(error, match="timeout"):
        _config.seconds("timeout", value)


def test_seconds_infinity_and_zero_only_where_they_make_sense():
    assert _config.seconds("timeout", None, default=3.0) == 3.0
    assert _config.seconds("timeout", 2) == 2.0 and isinstance(_config.seconds("t", 2), float)
    assert _config.seconds("timeout", 0) == 0.0
    assert _config.seconds("timeout", math.inf, infinite_is_none=True) is None
    with pytest.raises(ValueError, match="finite"):
        _config.seconds("grace", math.inf)
    with pytest.raises(ValueError, match="> 0"):
        _config.seconds("item_timeout", 0, allow_zero=False)
    with pytest.raises(TypeError, match="not None"):
        _config.seconds("grace", None, allow_none=False)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, 0, "30"])
def test_imap_refuses_a_bad_remote_timeout_at_construction(value):
    with pytest.raises((TypeError, ValueError), match="remote_timeout"):
        IMap(worker_num=1, remote_timeout=value)


@pytest.mark.parametrize("setting", ["timeout", "item_timeout"])
@pytest.mark.parametrize("value", [float("nan"), -1, "1", False])
def test_add_task_refuses_bad_seconds(setting, value):
    pool = IMap(worker_type="thread", worker_num=1)
    with pytest.raises((TypeError, ValueError), match=setting):
        pool.add_task(abs, [1], **{setting: value})


# -- any exception of a user function is an error item in place (18.3) -----------------

class CustomBaseException(BaseException):
    """Not an Exception: like KeyboardInterrupt, it passes `except Exception`."""


BASE_EXCEPTIONS = [KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError,
                   CustomBaseException]


def raise_on_3(x, kind):
    if x == 3:
        raise kind("raised by the function")
    return x


@pytest.mark.parametrize("kind", BASE_EXCEPTIONS, ids=lambda k: k.__name__)
def test_a_base_exception_of_a_function_is_an_error_in_place(kind, pool_options):
    """Each kind on each pool kind: the item is an error in its place (the same type), and
    every later item arrives."""
    with IMap(raise_on_3, range(10), args=(kind,), stride=2, **pool_options) as pool:
        outcome = []
        for _ in range(10):
            try:
                outcome.append(pool.next(timeout=DEADLINE))
            except BaseException as exc:  # noqa: BLE001 - what the test looks at
                outcome.append(type(exc))
        with pytest.raises(StopIteration):
            pool.next(timeout=DEADLINE)
    assert outcome == [0, 1, 2, kind, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("kind", BASE_EXCEPTIONS, ids=lambda k: k.__name__)
def test_a_base_exception_with_an_item_timeout_is_an_error_in_place(kind, pool_options):
    """Tracked evaluation (an item_timeout) takes another path in every kind of worker."""
    pool = IMap(stride=2, **pool_options)
    results = pool.add_task(raise_on_3, range(6), args=(kind,), item_timeout=DEADLINE)
    with pool:
        pool.start()
        outcome = []
        for _ in range(6):
            try:
                outcome.append(results.next(timeout=DEADLINE))
            except BaseException as exc:  # noqa: BLE001
                outcome.append(type(exc))
    assert outcome == [0, 1, 2, kind, 4, 5]


# -- a broken pool is a state, not a flood (11.5) -------------------------------------------

class KillsTheWorkerThatLoadsIt:
    """An argument whose unpickling ends the process: every worker dies loading the task."""

    def __reduce__(self):
        return (os._exit, (3,))


def identity(x, _=None):
    return x


def test_workers_that_crash_at_start_break_the_pool_once(caplog):
    """200 items, every worker dies while it loads the function: a few deaths, then every item
    fails at once with one BrokenPoolError naming the first cause; one ERROR record."""
    caplog.set_level(logging.ERROR, logger="imap")
    started = time.monotonic()
    with IMap(identity, range(200), args=(KillsTheWorkerThatLoadsIt(),), worker_num=2) as pool:
        outcome = []
        for _ in range(200):
            try:
                outcome.append(pool.next(timeout=DEADLINE))
            except BrokenPoolError as exc:
                outcome.append(str(exc).split(": ", 1)[1])
    assert time.monotonic() - started < DEADLINE
    assert len(set(outcome)) == 1, outcome[:3]
    assert "is broken: 3 workers in a row could not start or died before doing any work" \
        in outcome[0]
    assert "exited with code 3 while loading the function of task 0" in outcome[0]
    broken = [r for r in caplog.records if "is broken" in r.getMessage()]
    assert len(broken) == 1
    assert issubclass(BrokenPoolError, WorkerStartError)
    assert issubclass(BrokenPoolError, WorkerDiedError)


# -- stop() of a half-started IMap never raises (18.4) --------------------------------------

def test_stop_after_only_the_workers_started_does_not_raise(worker_type):
    pool = IMap(worker_type=worker_type, worker_num=2)
    pool.add_task(identity, range(10))
    pool.start(stages=[1])          # the workers, not the feeder: as a signal may leave it
    pool.stop()
    assert not pool.started


def test_stop_from_another_thread_while_start_runs_waits_then_stops():
    pool = IMap(worker_num=2, start_method="spawn")   # a slow start: new interpreters
    pool.add_task(identity, range(10))
    errors = []

    def stop_soon():
        try:
            time.sleep(0.02)
            pool.stop()
        except BaseException as exc:  # noqa: BLE001 - what the test looks at
            errors.append(exc)
    stopper = threading.Thread(target=stop_soon)
    stopper.start()
    try:
        pool.start()
    except RuntimeError:
        pass                         # stopped before start() returned: allowed
    stopper.join(DEADLINE)
    pool.stop()
    assert errors == [] and not pool.started
