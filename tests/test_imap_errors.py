"""Errors in place: exceptions, pickling failures, dying workers.

Exceptions run on every kind of pool (``pool_options``); pickling failures on the kinds that
pickle (process, remote, dask); dying workers and item timeouts on the kind each test names
(a worker that exits would take a thread or inline pool's program with it; the inline
pool's item_timeout is in test_imap_inline.py, remote and dask have their own suites).
"""
import ctypes
import os
import pathlib
import signal
import time

import pytest

from imap import IMap, RemoteTraceback, SerializationError, WorkerDiedError

DEADLINE = 30.0


def add1(x):
    return x + 1


def invert(x):
    return 1 / x


def test_exception_is_raised_in_place_and_the_task_goes_on(pool_options):
    with IMap(add1, [1, "a", 3, None, 5], **pool_options) as pool:
        assert pool.next() == 2
        with pytest.raises(TypeError):
            pool.next()
        assert pool.next() == 4
        with pytest.raises(TypeError):
            pool.next()
        assert pool.next() == 6
        with pytest.raises(StopIteration):
            pool.next()


def test_exception_carries_the_worker_traceback(pool_options):
    with IMap(invert, [1, 0, 2], **pool_options.with_workers(1)) as pool:
        assert pool.next() == 1.0
        with pytest.raises(ZeroDivisionError) as info:
            pool.next()
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "invert" in str(cause) and "ZeroDivisionError" in str(cause)
        assert pool.next() == 0.5


def test_errors_in_iteration_stop_the_for_loop_but_not_the_task(pool_options):
    with IMap(invert, [1, 0, 4], **pool_options.with_workers(1)) as pool:
        results = []
        with pytest.raises(ZeroDivisionError):
            for value in pool:
                results.append(value)
        results.extend(pool)
        assert results == [1.0, 0.25]


class Unpicklable:
    def __reduce__(self):
        raise TypeError("no pickling for me")


class FailsToUnpickle:
    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise ValueError("cannot rebuild on this side")


def make_unpicklable_result(x):
    return Unpicklable() if x == 2 else x


@pytest.fixture
def pickling(pool_options):
    """pool_options of the kinds that pickle items, results and exceptions."""
    if pool_options.kind in ("inline", "thread"):
        pytest.skip(f"{pool_options.kind} pools pickle nothing")
    return pool_options


def test_an_item_that_cannot_be_pickled_fails_alone(pickling):
    items = [0, 1, Unpicklable(), 3]
    with IMap(add1, items, **pickling) as pool:
        assert pool.next() == 1
        assert pool.next() == 2
        with pytest.raises(SerializationError, match="item 2 of task 0 cannot be pickled"):
            pool.next()
        assert pool.next() == 4


def test_a_result_that_cannot_be_pickled_fails_alone(pickling):
    with IMap(make_unpicklable_result, range(5), **pickling) as pool:
        assert [pool.next(), pool.next()] == [0, 1]
        with pytest.raises(SerializationError, match="result of item 2 of task 0"):
            pool.next()
        assert [pool.next(), pool.next()] == [3, 4]


def test_an_item_that_cannot_be_unpickled_in_the_worker_fails_alone(pickling):
    items = [0, 1, FailsToUnpickle(), 3]
    with IMap(add1, items, **pickling.with_workers(1)) as pool:
        assert [pool.next(), pool.next()] == [1, 2]
        with pytest.raises(SerializationError, match="cannot be unpickled"):
            pool.next()
        assert pool.next() == 4


class UnpicklableError(Exception):
    def __init__(self, a, b):
        super().__init__(a)  # unpickling calls __init__(a) and fails


def raise_odd_exception(x):
    if x == 1:
        raise UnpicklableError("odd", "arguments")
    return x


def test_an_exception_that_cannot_be_pickled_back_is_replaced(pickling):
    from imap import RemoteError
    with IMap(raise_odd_exception, range(3), **pickling.with_workers(1)) as pool:
        assert pool.next() == 0
        with pytest.raises(RemoteError, match="UnpicklableError: odd") as info:
            pool.next()
        assert "UnpicklableError" in info.value.type_name
        assert pool.next() == 2


# -- dying workers ------------------------------------------------------------------------

def exit_on_3(x):
    if x == 3:
        os._exit(7)
    return x


def sigkill_on_3(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def segfault_on_3(x):
    if x == 3:
        ctypes.string_at(0)
    return x


@pytest.mark.parametrize("func, words", [
    (exit_on_3, "exited with code 7"),
    (sigkill_on_3, "killed by SIGKILL"),
    (segfault_on_3, "killed by SIGSEGV"),
])
def test_a_worker_that_dies_fails_only_its_item(func, words):
    data = list(range(40))
    with IMap(func, data, worker_num=2) as pool:
        results = []
        for _ in data:
            try:
                results.append(pool.next(timeout=DEADLINE))
            except WorkerDiedError as exc:
                results.append("died")
                assert words in str(exc)
                assert exc.index == 3 and exc.task == 0
        with pytest.raises(StopIteration):
            pool.next()
    assert results == [x if x != 3 else "died" for x in data]


def write_pid_then_sleep(x, folder):
    if x == 5:
        pathlib.Path(folder, "pid").write_text(str(os.getpid()))
        time.sleep(60)
    return x


def test_a_worker_killed_from_outside_fails_the_item_it_was_evaluating(tmp_path):
    data = list(range(12))
    pool = IMap(write_pid_then_sleep, data, args=(str(tmp_path),), worker_num=2, stride=2,
                buffer=16)
    with pool:
        pid_file = tmp_path / "pid"
        end = time.monotonic() + DEADLINE
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < end
            time.sleep(0.01)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        results = []
        for _ in data:
            try:
                results.append(pool.next(timeout=DEADLINE))
            except WorkerDiedError as exc:
                assert "SIGKILL" in str(exc) and exc.index == 5
                results.append("died")
    assert results == [x if x != 5 else "died" for x in data]


def test_dead_workers_are_replaced_and_the_pool_goes_on():
    data = list(range(30))
    with IMap(exit_on_every_tenth, data, worker_num=2, stride=2) as pool:
        outcome = []
        for _ in data:
            try:
                outcome.append(pool.next(timeout=DEADLINE))
            except WorkerDiedError:
                outcome.append(None)
    assert outcome == [None if x % 10 == 9 else x for x in data]


def exit_on_every_tenth(x):
    if x % 10 == 9:
        os._exit(1)
    return x


def leave_on_1(x):
    if x == 1:
        raise SystemExit(3)
    return x


def test_system_exit_raised_by_the_function_is_an_error_in_place(pool_options):
    with IMap(leave_on_1, range(3), **pool_options.with_workers(1)) as pool:
        assert pool.next() == 0
        with pytest.raises(SystemExit):
            pool.next()
        assert pool.next() == 2


# -- per-item timeouts ---------------------------------------------------------------------

def sleep_on_2(x):
    if x == 2:
        time.sleep(3)
    return x


def stuck_on_2(x):
    if x == 2:
        time.sleep(20)
    return x


def test_item_timeout_kills_and_replaces_a_process_worker():
    pool = IMap(worker_num=2, stride=2)
    results = pool.add_task(stuck_on_2, range(6), item_timeout=0.5)
    with pool:
        pool.start()
        started = time.monotonic()
        outcome = []
        for _ in range(6):
            try:
                outcome.append(next(results))
            except TimeoutError as exc:
                assert "item 2 of task 0 ran longer than its item_timeout of 0.5 s" in str(exc)
                assert "killed" in str(exc)
                outcome.append("timeout")
        assert time.monotonic() - started < 15    # did not wait for the 20 s item
    assert outcome == [0, 1, "timeout", 3, 4, 5]


@pytest.mark.allow_leftovers   # the abandoned item's thread ends 3 s later, by design
def test_item_timeout_abandons_the_item_in_a_thread_pool():
    pool = IMap(worker_type="thread", worker_num=2, stride=2)
    results = pool.add_task(sleep_on_2, range(6), item_timeout=0.5)
    with pool:
        pool.start()
        outcome = []
        for _ in range(6):
            try:
                outcome.append(next(results))
            except TimeoutError as exc:
                assert "abandoned" in str(exc)
                outcome.append("timeout")
    assert outcome == [0, 1, "timeout", 3, 4, 5]


def test_item_timeout_must_be_positive():
    pool = IMap(worker_type="thread", worker_num=1)
    with pytest.raises(ValueError, match="item_timeout must be a number"):
        pool.add_task(add1, [1], item_timeout=-1)
