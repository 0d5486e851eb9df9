"""The seam of imap.protocols: BatchFunction (call_batch), BatchSource and IterableSource,
the task handle (take_ready, notify, remove), add_task while running, and the feeder that
never waits for an input (docs/imap.md, "Feeding an IMap from your own sources").

Tests that run a pool run on every kind (``pool_options``); those that need a feeder's
read-ahead or dealing, or items that wait for the test's Events, say why."""
import itertools
import threading
import time
import warnings
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imap
from imap import BatchSource, IMap, IterableSource, Results

DEADLINE = 30.0   # a generous bound against hangs, never a speed check


def add1(x):
    return x + 1


def wait_until(predicate, timeout=DEADLINE):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


class PushSource:
    """A BatchSource fed by the test: push(), end(); wakes its consumer as it should."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = deque()
        self.ended = False
        self.wake = None
        self.asked = []

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
            self.asked.append(count)
            if not self.items:
                return None if self.ended else []
            return [self.items.popleft() for _ in range(min(count, len(self.items)))]

    def notify(self, wake):
        self.wake = wake


def drain(handle, expected_count):
    """Every result of a task through take_ready + notify, never through next()."""
    arrived = threading.Event()
    handle.notify(arrived.set)
    values, errors = [], {}
    while True:
        arrived.clear()
        results = handle.take_ready()
        if results is None:
            break
        if not results.values:
            assert arrived.wait(DEADLINE), "no wake within the deadline"
            continue
        for position, exc in (results.errors or {}).items():
            errors[len(values) + position] = exc
        values.extend(results.values)
    assert len(values) == expected_count
    return values, errors


# -- BatchFunction ----------------------------------------------------------------------------

class BatchDoubler:
    """Doubles each item; raises for 13; records the batch sizes it was given."""

    def __init__(self):
        self.sizes = []

    def call_batch(self, items):
        self.sizes.append(len(items))
        values, errors = [], None
        for position, item in enumerate(items):
            if item == 13:
                errors = errors or {}
                errors[position] = ValueError("thirteen")
                values.append(None)
            else:
                values.append(item * 2)
        return values, errors

    def __call__(self, item):       # one item (the IMap's tracked mode)
        values, errors = self.call_batch([item])
        if errors:
            raise errors[0]
        return values[0]


class Broken(BatchDoubler):
    def call_batch(self, items):
        raise RuntimeError("broken batch")


class Short(BatchDoubler):
    def call_batch(self, items):
        return [0] * (len(items) - 1), None


def test_a_batch_function_gets_whole_batches_and_its_errors_are_in_place(pool_options):
    function = BatchDoubler()
    with IMap(function, range(3000), **pool_options) as pool:
        values, errors = drain(pool.get_task(0), 3000)
    expected = [x * 2 for x in range(3000)]
    expected[13] = None
    assert values == expected
    assert list(errors) == [13] and str(errors[13]) == "thirteen"
    if "worker_type" in pool_options and pool_options["worker_type"] == "thread":
        assert max(function.sizes) > 16       # batches, not one call per item


@pytest.mark.parametrize("function, message", [(Broken(), "broken batch"),
                                               (Short(), "returned 1 values for 2 items")])
def test_a_failing_batch_function_fails_every_item_of_its_batch(function, message):
    from imap._evaluate import evaluate
    values, errors, elapsed = evaluate(function, [1, 2])
    assert values == [None, None] and sorted(errors) == [0, 1] and elapsed >= 0
    assert all(message in str(error) for error in errors.values())


def test_the_old_dunders_are_gone():
    for name in ("__imap_take__", "__imap_read__", "__imap_batch__", "__imap_chained__"):
        assert not hasattr(IMap, name) and not hasattr(imap.TaskIterator, name)
    assert isinstance(PushSource(), BatchSource)


# -- IterableSource -----------------------------------------------------------------------------

def test_a_steady_iterable_is_taken_in_bulk_without_a_thread():
    source = IterableSource(range(10), read_ahead=4, name="steady")
    assert source.steady
    source.notify(lambda: None)
    assert source.take(4) == [0, 1, 2, 3]
    assert source.take(100) == [4, 5, 6, 7, 8, 9]
    assert source.take(1) is None and source.take(1) is None
    assert source.thread is None


def test_a_steady_map_that_raises_gives_the_items_before_then_the_error():
    source = IterableSource(map(lambda x: 1 // x, [1, 1, 0, 1]), read_ahead=8, name="m")
    assert source.steady
    assert source.take(8) == [1, 1]
    with pytest.raises(ZeroDivisionError):
        source.take(8)
    assert source.take(8) == [1]
    assert source.take(8) is None


def test_a_generator_is_read_by_a_thread_that_reads_only_what_was_asked():
    pulled = []
    release = threading.Event()

    def generate():
        for i in range(6):
            pulled.append(i)
            yield i
        release.wait(DEADLINE)
        raise KeyError("late")

    woken = threading.Event()
    source = IterableSource(generate(), read_ahead=100, name="gen")
    assert not source.steady
    source.notify(woken.set)
    time.sleep(0.05)
    assert pulled == []                  # no demand yet: nothing read ahead
    assert source.take(2) == []          # asks for 2: the reader reads them, then wakes us
    assert woken.wait(DEADLINE)
    wait_until(lambda: len(pulled) >= 2)
    time.sleep(0.05)
    assert len(pulled) == 2              # never more than the demand
    got = []
    while len(got) < 6:
        woken.clear()
        items = source.take(6 - len(got))
        if not items:
            assert woken.wait(DEADLINE)
        got += items
    assert got == list(range(6))
    release.set()
    woken.clear()
    error = None
    while error is None:
        try:
            assert source.take(3) == []
            assert woken.wait(DEADLINE)
        except KeyError as exc:
            error = exc
    assert source.take(3) is None        # the generator ended after raising
    source.thread.join(DEADLINE)


def test_close_stops_the_reader_thread():
    source = IterableSource(itertools.cycle([1, 2]), read_ahead=3, name="cycle")
    assert not source.steady
    assert source.take(3) in ([], [1], [1, 2], [1, 2, 1])
    source.close()
    source.thread.join(DEADLINE)
    assert not source.thread.is_alive()
    assert source.take(3) is None


def test_iterable_source_checks_its_arguments():
    with pytest.raises(ValueError, match="read_ahead"):
        IterableSource([1], read_ahead=0, name="x")
    with pytest.raises(TypeError, match="not iterable"):
        IterableSource(5, read_ahead=1, name="x")


# -- the feeder never waits for an input ------------------------------------------------------

def test_an_empty_batch_source_never_blocks_the_other_tasks(pool_options):
    source = PushSource()
    pool = IMap(**pool_options, stride=4)
    waiting = pool.add_task(add1, source)
    steady = pool.add_task(add1, range(500))
    with pool:
        pool.start()
        # the source has nothing for now: the other task runs to its end meanwhile
        assert [steady.next(timeout=DEADLINE) for _ in range(500)] == list(range(1, 501))
        assert waiting.take_ready() == Results([], None)
        source.push(1, 2, 3)
        assert [waiting.next(timeout=DEADLINE) for _ in range(3)] == [2, 3, 4]
        source.push(4)
        source.end()
        assert list(waiting) == [5]
    assert all(count >= 1 for count in source.asked)


def test_an_item_of_a_slow_generator_arrives_while_the_generator_waits(pool_options):
    release = threading.Event()

    def slow():
        yield 1
        release.wait(DEADLINE)           # blocks without telling anyone
        yield 2

    with IMap(add1, slow(), **pool_options) as pool:
        assert pool.next(timeout=DEADLINE) == 2      # a hang guard: it comes at once
        release.set()
        assert list(pool) == [3]


def test_waiting_for_input_is_a_harmless_no_op():
    imap.waiting_for_input()


@pytest.mark.parametrize("kind", ["steady", "generator"])
def test_tasks_given_one_iterator_take_turns_of_stride_items(pool_options, kind):
    """The feeder deals a shared input in turns of stride items (an inline pool has no
    feeder: its tasks take a shared input's items as they are read)."""
    if pool_options.kind == "inline":
        pytest.skip("an inline pool has no feeder to deal a shared input")
    shared = iter(range(12)) if kind == "steady" else (x for x in range(12))
    pool = IMap(**pool_options, stride=3)
    first = pool.add_task(add1, shared)
    second = pool.add_task(add1, shared)
    with pool:
        pool.start()
        # not strict: the end of `second` is left unread, as take_ready() below expects
        assert list(zip(first, second, strict=False)) == [(1, 4), (2, 5), (3, 6), (7, 10), (8, 11),
                                            (9, 12)]
        assert first.take_ready() is None and second.take_ready() is None


# -- take_ready ---------------------------------------------------------------------------------

def gated(gates):
    def wait_for_gate(i):
        gates[i].wait(DEADLINE)
        if i == 2:
            raise KeyError(i)
        return i
    return wait_for_gate


def test_take_ready_never_waits_and_keeps_errors_in_place():
    """Items wait for the test's Events while take_ready() is called: thread workers (they
    share the test's memory and run beside the reader)."""
    gates = [threading.Event() for _ in range(4)]
    pool = IMap(worker_type="thread", worker_num=4, stride=4)
    handle = pool.add_task(gated(gates), range(4))
    with pytest.raises(RuntimeError, match="not started"):
        handle.take_ready()
    with pool:
        pool.start()
        assert handle.take_ready() == Results([], None)     # at once, nothing is ready
        gates[1].set()
        time.sleep(0.05)
        assert handle.take_ready() == Results([], None)     # ordered: 0 comes first
        for gate in gates:
            gate.set()
        values, errors = drain(handle, 4)
        assert values == [0, 1, None, 3]
        assert isinstance(errors[2], KeyError)
        assert handle.take_ready() is None and handle.take_ready() is None
        with pytest.raises(StopIteration):
            next(handle)
    with pytest.raises(RuntimeError, match="not started"):
        handle.take_ready()


def test_take_ready_respects_count_and_mixes_with_next(pool_options):
    with IMap(add1, range(100), **pool_options) as pool:
        handle = pool.get_task(0)
        got = [handle.next(timeout=DEADLINE)]
        while len(got) < 100:
            results = handle.take_ready(7)
            assert len(results.values) <= 7 and results.errors is None
            got += results.values
            if len(got) < 100:
                got.append(handle.next(timeout=DEADLINE))
        assert got == list(range(1, 101))
        assert handle.take_ready(7) is None
        with pytest.raises(ValueError, match="count"):
            handle.take_ready(0)


def test_take_ready_gives_buffer_slots_back(pool_options):
    """The feeder refills the buffer after every take (an inline pool reads nothing
    ahead)."""
    if pool_options.kind == "inline":
        pytest.skip("an inline pool has no feeder: it reads nothing ahead")
    source = itertools.count()
    pool = IMap(**pool_options, stride=4, buffer=8)
    handle = pool.add_task(add1, source)
    with pool:
        pool.start()
        wait_until(lambda: pool.buffer_used == 8)
        taken = 0
        while taken < 200:
            results = handle.take_ready()
            taken += len(results.values)
            assert pool.buffer_used <= 8
            if not results.values:
                time.sleep(0.001)
        wait_until(lambda: pool.buffer_used == 8)    # refilled after every take


def fail_odd(x):
    if x % 2:
        raise ValueError(x)
    return x


def test_take_ready_of_an_unordered_task_joins_runs_with_their_errors(pool_options):
    pool = IMap(**pool_options, ordered=False)
    handle = pool.add_task(fail_odd, range(50))
    with pool:
        pool.start()
        values, errors = drain(handle, 50)
    assert sorted(v for v in values if v is not None) == list(range(0, 50, 2))
    assert sorted(e.args[0] for e in errors.values()) == list(range(1, 50, 2))
    assert all(values[position] is None for position in errors)


# -- notify -----------------------------------------------------------------------------------

def test_notify_is_called_on_delivery_at_the_end_and_at_stop(pool_options):
    source = PushSource()
    calls = []
    called = threading.Event()

    def wake():
        calls.append(time.monotonic())
        called.set()

    pool = IMap(**pool_options.with_workers(1))
    handle = pool.add_task(add1, source)
    handle.notify(wake)
    pool.start()
    try:
        source.push(1)
        assert called.wait(DEADLINE)                # delivered
        assert handle.take_ready() == Results([2], None)
        called.clear()
        source.end()
        assert called.wait(DEADLINE)                # the task ended
        assert handle.take_ready() is None
        other = pool.add_task(add1, PushSource())
        stopped = threading.Event()
        other.notify(stopped.set)
    finally:
        pool.stop()
    assert stopped.is_set()                         # stop() wakes the readers too
    with pytest.raises(TypeError, match="callable"):
        handle.notify(None)


# -- remove, ids, add_task while running -------------------------------------------------------

def test_remove_before_start_keeps_the_other_ids(pool_options):
    pool = IMap(**pool_options.with_workers(1))
    first = pool.add_task(add1, [1])
    second = pool.add_task(add1, [2])
    third = pool.add_task(add1, [3])
    second.remove()
    second.remove()                                  # idempotent
    assert [t.task for t in (first, third)] == [0, 2]
    with pytest.raises(ValueError, match="no task 1"):
        pool.get_task(1)
    fourth = pool.add_task(add1, [4])
    assert fourth.task == 3                          # ids are not reused
    with pool:
        pool.start()
        assert pool.next(task=2) == 4 and list(first) == [2] and list(fourth) == [5]


def test_remove_while_running_ends_the_task_and_gives_its_slots_back(pool_options):
    """The removed task's read-ahead comes back to the buffer (an inline pool reads nothing
    ahead: see test_imap_inline.py for its remove())."""
    if pool_options.kind == "inline":
        pytest.skip("an inline pool has no feeder: it reads nothing ahead")
    pool = IMap(**pool_options, stride=4, buffer=16)
    endless = pool.add_task(add1, itertools.count())
    finite = pool.add_task(add1, range(1000))
    with pool:
        pool.start()
        assert endless.next(timeout=DEADLINE) == 1
        wait_until(lambda: pool.buffer_used >= 8)
        endless.remove()
        assert endless.take_ready() is None
        with pytest.raises(StopIteration):
            next(endless)
        with pytest.raises(ValueError, match="no task 0"):
            pool.next(task=0)
        assert list(finite) == list(range(1, 1001))   # the buffer is the other task's now
        wait_until(lambda: pool.buffer_used == 0)
        endless.remove()
    endless.remove()                                     # after stop: nothing happens


def test_a_chain_reading_a_removed_task_ends(pool_options):
    pool = IMap(**pool_options, stride=2)
    upstream = pool.add_task(add1, itertools.count())
    downstream = pool.add_task(add1, upstream)
    with pool:
        pool.start()
        assert [downstream.next(timeout=DEADLINE) for _ in range(5)] == [2, 3, 4, 5, 6]
        upstream.remove()
        rest = list(downstream)                        # what was under way, then the end
        assert rest == list(range(7, 7 + len(rest)))


def test_add_task_while_running(pool_options):
    source = PushSource()
    with IMap(add1, source, **pool_options) as pool:
        later = pool.add_task(add1, range(20))
        chained = pool.add_task(add1, later)
        assert later.task == 1 and chained.task == 2
        assert list(chained) == list(range(2, 22))
        source.push(10)
        source.end()
        assert list(pool) == [11]


# -- the buffer bound and chains ----------------------------------------------------------------

def test_the_buffer_bound_holds_while_a_consumer_reads_slowly(pool_options):
    def generate():
        yield from range(10_000)
    pool = IMap(**pool_options, stride=8, buffer=24)
    steady = pool.add_task(add1, range(10_000))
    slow = pool.add_task(add1, generate())
    with pool:
        pool.start()
        for expected in range(1, 150):
            assert next(steady) == expected and next(slow) == expected
            assert pool.buffer_used <= 24
            time.sleep(0.001)


#: examples per kind: the buffer accounting is the feeder's, the same on every kind with
#: workers (threads show it fastest); a process, remote or Dask pool costs more to start
EXAMPLES = {"inline": 25, "thread": 25, "process": 3, "remote": 3, "dask": 3}
chains = st.fixed_dictionaries(dict(
    stride=st.integers(1, 6), extra=st.integers(0, 2), length=st.integers(1, 4),
    workers=st.integers(1, 3), items=st.integers(0, 40), generator=st.booleans()))


def test_a_chain_never_exceeds_its_buffer_and_never_hangs(pool_options):
    @settings(max_examples=EXAMPLES[pool_options.kind], deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(chains)
    def bounded(chain):
        check_chain(pool_options.with_workers(chain.pop("workers")), **chain)
    bounded()


def check_chain(options, stride, extra, length, items, generator):
    buffer = stride + extra
    data = (x for x in range(items)) if generator else range(items)
    pool = IMap(**options, stride=stride, buffer=buffer)
    task = pool.add_task(add1, data)
    for _ in range(length - 1):
        task = pool.add_task(add1, task)
    got = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pool:
            pool.start()
            while True:
                try:
                    got.append(task.next(timeout=DEADLINE))
                except StopIteration:
                    break
                assert pool.buffer_used <= buffer
    assert got == [x + length for x in range(items)]
    assert not [w for w in caught if "going over the buffer" in str(w.message)]


def test_preload_checks_its_arguments_and_remembers_modules(monkeypatch):
    from imap import _config
    monkeypatch.setattr(_config, "PRELOAD", list(_config.PRELOAD))
    imap.preload("json", "json")
    assert _config.PRELOAD.count("json") == 1
    with pytest.raises(TypeError, match="module names"):
        imap.preload(None)
