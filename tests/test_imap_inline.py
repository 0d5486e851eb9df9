"""The inline pool, IMap(worker_type='inline'): what only it does (the shared suites run on it
too, through ``pool_options``). Items are evaluated by the thread that reads the results, in
order, one per result asked for by next(); take_ready() evaluates what the input has ready;
next(timeout=) bounds the wait for the input; item_timeout interrupts an item in the main
thread and is checked after the item elsewhere; pdb works inside a worker function."""
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque

import pytest

from imap import IMap, Results
from papy import Piper, Plumber

DEADLINE = 30.0   # a generous bound against hangs, never a speed check


def add1(x):
    return x + 1


class PushSource:
    """A BatchSource the test fills: push(), end()."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = deque()
        self.ended = False
        self.wake = None

    def push(self, *items):
        with self.lock:
            self.items.extend(items)
            wake = self.wake
        if wake is not None:
            wake()

    def end(self):
        with self.lock:
            self.ended = True
            wake = self.wake
        if wake is not None:
            wake()

    def take(self, count):
        with self.lock:
            if not self.items:
                return None if self.ended else []
            return [self.items.popleft() for _ in range(min(count, len(self.items)))]

    def notify(self, wake):
        self.wake = wake


def test_items_are_evaluated_in_the_reading_thread_in_order_and_no_thread_is_started():
    seen = []

    def record(x):
        seen.append((x, threading.get_ident()))
        return x
    before = set(threading.enumerate())
    pool = IMap(worker_type="inline", worker_num=4)          # worker_num is ignored
    first = pool.add_task(record, range(5))
    second = pool.add_task(add1, first)                       # a chain
    with pool:
        pool.start()
        assert set(threading.enumerate()) == before
        assert list(second) == [1, 2, 3, 4, 5]
        assert set(threading.enumerate()) == before
    assert seen == [(x, threading.get_ident()) for x in range(5)]
    assert pool.worker_num == 1


def test_next_evaluates_one_item_per_result_like_map():
    pulled, evaluated = [], []

    def numbers():
        for x in range(100):
            pulled.append(x)
            yield x

    def record(x):
        evaluated.append(x)
        return x
    with IMap(record, numbers(), worker_type="inline") as pool:
        assert [pool.next(), pool.next(), pool.next()] == [0, 1, 2]
        assert pulled == evaluated == [0, 1, 2]        # nothing read or evaluated ahead
        assert pool.buffer_used == 0


def test_take_ready_evaluates_what_the_input_has_ready_and_never_waits():
    source = PushSource()
    woken = threading.Event()
    pool = IMap(worker_type="inline", stride=8)
    handle = pool.add_task(add1, source)
    handle.notify(woken.set)
    with pool:
        pool.start()
        assert handle.take_ready() == Results([], None)      # at once: nothing is ready
        source.push(*range(20))
        assert woken.is_set()                              # the input's wake reaches the reader
        assert handle.take_ready(3) == Results([1, 2, 3], None)
        assert handle.take_ready() == Results(list(range(4, 12)), None)   # up to a stride
        assert handle.take_ready(100).values == list(range(12, 21))
        source.push("x")
        source.end()
        ready = handle.take_ready()
        assert ready.values == [None] and isinstance(ready.errors[0], TypeError)
        assert handle.take_ready() is None


def test_next_timeout_bounds_the_wait_for_the_input():
    source = PushSource()
    pool = IMap(worker_type="inline")
    handle = pool.add_task(add1, source)
    with pool:
        pool.start()
        with pytest.raises(TimeoutError):
            handle.next(timeout=0.05)
        with pytest.raises(TimeoutError):
            handle.next(block=False)
        source.push(1)
        assert handle.next(block=False) == 2              # ready: evaluated, no waiting
        pusher = threading.Timer(0.05, source.push, args=(2,))
        pusher.start()
        assert handle.next(timeout=DEADLINE) == 3          # woken by the input
        pusher.join()


def test_skip_drops_the_position_a_timeout_gave_up():
    source = PushSource()
    pool = IMap(worker_type="inline", skip=True)
    handle = pool.add_task(add1, source)
    with pool:
        pool.start()
        with pytest.raises(TimeoutError):
            handle.next(timeout=0.01)                      # position 0 given up
        source.push(10, 20, 30)
        source.end()
        assert list(handle) == [21, 31]


def sleep_on_2(x, seconds):
    if x == 2:
        time.sleep(seconds)
    return x


def test_item_timeout_interrupts_an_item_in_the_main_thread():
    before = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)[0] > 0
    pool = IMap(worker_type="inline")
    results = pool.add_task(sleep_on_2, range(5), args=(20,), item_timeout=0.2)
    started = time.monotonic()
    outcome = []
    with pool:
        pool.start()
        for _ in range(5):
            try:
                outcome.append(next(results))
            except TimeoutError as exc:
                assert "item 2 of task 0" in str(exc) and "interrupted" in str(exc)
                outcome.append("timeout")
    assert outcome == [0, 1, "timeout", 3, 4]
    assert time.monotonic() - started < 15                 # did not wait for the 20 s item
    # the SIGALRM handler and an outer timer (pytest-timeout's) are put back
    assert (signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)[0] > 0) \
        == before


def test_item_timeout_outside_the_main_thread_is_checked_when_the_item_returns():
    pool = IMap(worker_type="inline")
    results = pool.add_task(sleep_on_2, range(4), args=(0.3,), item_timeout=0.1)
    outcome = []

    def read():
        for _ in range(4):
            try:
                outcome.append(next(results))
            except TimeoutError as exc:
                assert "cannot interrupt" in str(exc)
                outcome.append("timeout")
    with pool:
        pool.start()
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(DEADLINE)
    assert outcome == [0, 1, "timeout", 3]


def test_a_task_of_another_pool_reads_an_inline_task_and_the_reverse():
    with IMap(worker_type="inline") as inline, \
            IMap(worker_type="thread", worker_num=2, stride=4) as threads:
        first = inline.add_task(add1, range(50))              # evaluated by the thread
        second = threads.add_task(add1, first)                 # pool's feeder, its reader
        third = inline.add_task(add1, second)                  # evaluated here
        inline.start()
        threads.start()
        assert list(third) == list(range(3, 53))


def test_remove_ends_the_task():
    pool = IMap(worker_type="inline")
    endless = pool.add_task(add1, (x for x in iter(int, 1)))   # zeros, forever
    finite = pool.add_task(add1, range(3))
    with pool:
        pool.start()
        # an input that may wait (a generator) is read one item per take: never two waits
        assert endless.take_ready(2) == Results([1], None)
        assert next(endless) == 1
        endless.remove()
        assert endless.take_ready() is None
        with pytest.raises(StopIteration):
            next(endless)
        assert list(finite) == [1, 2, 3]
        assert pool.buffer_used == 0


def test_a_pipeline_on_an_inline_pool_evaluates_in_its_scheduler_thread():
    threads = []

    def where(inbox):
        threads.append(threading.current_thread().name)
        return inbox[0] * 2
    with IMap(worker_type="inline") as pool:
        double = Piper(where, parallel=pool, name="double")
        last = Piper(where, parallel=pool, name="again")
        plumber = Plumber()
        plumber.add_pipe((double, last))
        with plumber:
            plumber.start([range(10)])
            assert list(last) == [4 * x for x in range(10)]
    assert len(threads) == 20 and {t.split("-")[1] for t in threads} == {"scheduler"}


PDB_SCRIPT = textwrap.dedent("""
    from imap import IMap

    def work(x):
        y = x * 7
        breakpoint()
        return y

    if __name__ == "__main__":
        print("results", list(IMap(work, [1, 2], worker_type="inline")))
""")


def test_pdb_works_inside_a_worker_function(tmp_path):
    script = tmp_path / "debug_me.py"
    script.write_text(PDB_SCRIPT)
    commands = "p ('seen', x, y)\nc\np ('seen', x, y)\nc\n"
    done = subprocess.run([sys.executable, str(script)], input=commands, text=True,
                          capture_output=True, timeout=DEADLINE,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert "('seen', 1, 7)" in done.stdout and "('seen', 2, 14)" in done.stdout
    assert "results [7, 14]" in done.stdout


def sleeps_on_one(inbox):
    if inbox[0] == 1:
        time.sleep(0.3)
    return inbox[0]


def test_a_piper_timeout_on_an_inline_pool_fails_the_item_once_it_returns():
    """The scheduler thread is not the main thread: the item cannot be interrupted."""
    from papy import PiperError
    with IMap(worker_type="inline") as pool:
        piper = Piper(sleeps_on_one, parallel=pool, timeout=0.1)
        with Plumber() as plumber:
            plumber.add_pipe((piper,))
            plumber.start([range(3)])
            results = list(piper)
    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], PiperError) and isinstance(results[1].args[0], TimeoutError)
    assert "cannot interrupt" in str(results[1].args[0])
