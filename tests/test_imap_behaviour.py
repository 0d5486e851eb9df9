"""IMap behaviour: weaving, buffer, order, chains and joins, timeouts and skip.

Every test that does not need a particular kind of pool runs on each kind (``pool_options``,
tests/conftest.py). The others say why in their docstring: the weave, the read-ahead and the
overdraft belong to the feeder thread, which an inline pool does not have; tests whose items
wait for ``threading.Event``s the test sets need workers beside the reader that share the
test's memory (threads). The inline pool's own behaviour is in test_imap_inline.py.
"""
import itertools
import threading
import time

import pytest

from imap import IMap, waiting_for_input

DEADLINE = 30.0  # generous bound for waiting on a condition; never a speed check


def add1(x):
    return x + 1


def sub1(x):
    return x - 1


def wait_until(predicate, timeout=DEADLINE):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


# -- weaving -------------------------------------------------------------------------------

def test_weaving_order_with_one_thread_and_stride_2():
    """The weave (the feeder's order) is visible with one thread worker: on threads."""
    order = []

    def record(item):
        order.append(item)
        return item
    pool = IMap(worker_type="thread", worker_num=1, stride=2)
    left = pool.add_task(record, [f"L{i}" for i in range(4)])
    right = pool.add_task(record, [f"R{i}" for i in range(4)])
    with pool:
        pool.start()
        # not strict: the order of reads is what is tested (the end of `right` is not read)
        assert list(zip(left, right, strict=False)) == [(f"L{i}", f"R{i}") for i in range(4)]
    assert order == ["L0", "L1", "R0", "R1", "L2", "L3", "R2", "R3"]


def test_chained_tasks_advance_in_strides():
    """The weave of a chain, made visible by one thread worker: on threads."""
    order = []

    def first(x):
        order.append(("first", x))
        return x

    def second(x):
        order.append(("second", x))
        return x
    pool = IMap(worker_type="thread", worker_num=1, stride=2)
    upstream = pool.add_task(first, range(4))
    downstream = pool.add_task(second, upstream)
    with pool:
        pool.start()
        assert list(downstream) == [0, 1, 2, 3]
    assert order == [("first", 0), ("first", 1), ("second", 0), ("second", 1),
                     ("first", 2), ("first", 3), ("second", 2), ("second", 3)]


# -- buffer and back-pressure ---------------------------------------------------------------

class CountingInput:
    """An infinite input that counts how often it was read."""

    def __init__(self):
        self.pulled = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.pulled += 1
        return self.pulled


@pytest.mark.parametrize("buffer", [4, 7])
def test_input_is_never_read_ahead_beyond_the_buffer(pool_options, buffer):
    """The feeder reads ahead up to the buffer and no further (an inline pool reads nothing
    ahead: test_imap_inline.py)."""
    if pool_options.kind == "inline":
        pytest.skip("an inline pool has no feeder: it reads nothing ahead")
    source = CountingInput()
    pool = IMap(**pool_options, stride=4, buffer=buffer)
    results = pool.add_task(add1, source)
    with pool:
        pool.start()
        # whole batches (here 2 items) are submitted, so a buffer of 7 fills to 6 or 7
        wait_until(lambda: source.pulled >= buffer - 1)
        time.sleep(0.2)  # room to misbehave; the bound below is an invariant
        assert source.pulled <= buffer
        taken = [next(results) for _ in range(10)]
        assert taken == list(range(2, 12))
        wait_until(lambda: source.pulled >= 10 + buffer - 1)
        time.sleep(0.2)
        assert source.pulled <= 10 + buffer


def test_results_nobody_takes_stop_submission():
    """Read-ahead stops at the buffer, in the weave's order (one thread worker shows it)."""
    evaluated = []

    def record(item):
        evaluated.append(item)
        return item
    pool = IMap(worker_type="thread", worker_num=1, stride=2, buffer=6)
    left = pool.add_task(record, [f"L{i}" for i in range(4)])
    right = pool.add_task(record, [f"R{i}" for i in range(4)])
    with pool:
        pool.start()
        wait_until(lambda: len(evaluated) >= 6)
        time.sleep(0.2)
        assert evaluated == ["L0", "L1", "R0", "R1", "L2", "L3"]
        assert [next(left), next(left)] == ["L0", "L1"]
        wait_until(lambda: len(evaluated) == 8)
        assert evaluated[6:] == ["R2", "R3"]
        assert list(right) == ["R0", "R1", "R2", "R3"]


def test_infinite_input_with_a_slow_consumer_stays_bounded(pool_options):
    source = CountingInput()
    with IMap(add1, source, **pool_options) as pool:
        bound = 2 * pool.stride  # the default buffer for one task
        for expected in range(2, 302):
            assert pool.next() == expected
        time.sleep(0.1)
        assert source.pulled <= 300 + bound


# -- order ---------------------------------------------------------------------------------

def sleep_inverse(x):
    time.sleep(0.05 / x)
    return x


def test_ordered_results_keep_input_order(pool_options):
    data = [1, 2, 3, 4, 5, 6, 7, 8]
    with IMap(sleep_inverse, data, **pool_options.with_workers(4), stride=4) as pool:
        assert list(pool) == data


def test_unordered_results_come_in_completion_order():
    """Items wait for Events the test sets: thread workers (they share the test's memory,
    and run beside the reader)."""
    release = {i: threading.Event() for i in range(4)}

    def wait_for_release(i):
        release[i].wait(DEADLINE)
        return i
    pool = IMap(worker_type="thread", worker_num=4, stride=4, ordered=False)
    results = pool.add_task(wait_for_release, range(4))
    with pool:
        pool.start()
        for i in (2, 0, 3, 1):
            release[i].set()
            assert next(results) == i
        with pytest.raises(StopIteration):
            next(results)


# -- chains and joins -------------------------------------------------------------------------

@pytest.mark.parametrize("stride, workers", [(1, 1), (2, 3), (5, 2), (23, 4)])
def test_two_chained_tasks(pool_options, stride, workers):
    pool = IMap(**pool_options.with_workers(workers), stride=stride)
    up = pool.add_task(add1, range(100))
    down = pool.add_task(sub1, up)
    with pool:
        pool.start()
        assert list(down) == list(range(100))
        with pytest.raises(StopIteration):
            next(up)


@pytest.mark.parametrize("buffer", [4, 5, 9])
def test_chain_of_four_with_the_minimal_buffer(pool_options, buffer):
    pool = IMap(**pool_options, stride=4, buffer=buffer)
    task = pool.add_task(add1, range(50))
    for _ in range(3):
        task = pool.add_task(add1, task)
    with pool:
        pool.start()
        assert list(task) == list(range(4, 54))


def test_three_tasks_zipped_into_a_fourth(pool_options):
    def total(triple):
        return sum(triple)
    pool = IMap(**pool_options, stride=3, buffer=12)
    a = pool.add_task(add1, range(30))
    b = pool.add_task(sub1, range(30))
    c = pool.add_task(add1, range(30))
    joined = pool.add_task(total, zip(a, b, c, strict=False))   # as a user would join
    with pool:
        pool.start()
        assert list(joined) == [3 * x + 1 for x in range(30)]


def test_two_independent_tasks_read_alternately(pool_options):
    pool = IMap(**pool_options, stride=3)
    pool.add_task(add1, range(20))
    pool.add_task(sub1, range(20))
    with pool:
        pool.start()
        for x in range(20):
            assert pool.next(task=0) == x + 1
            assert pool.next(task=1) == x - 1


def test_shared_upstream_read_by_two_chains(pool_options):
    pool = IMap(**pool_options.with_workers(3), stride=2)
    source = pool.add_task(add1, range(40))
    chain_a = pool.add_task(add1, source)
    chain_b = pool.add_task(sub1, chain_a)
    with pool:
        pool.start()
        assert list(chain_b) == [x + 1 for x in range(40)]


def test_imap_itself_as_input_of_task_1(pool_options):
    pool = IMap(**pool_options, stride=2)
    pool.add_task(add1, range(10))
    last = pool.add_task(add1, pool)
    with pool:
        pool.start()
        assert list(last) == list(range(2, 12))


def test_iterator_interleaved_with_next(pool_options):
    with IMap(add1, range(300), **pool_options) as pool:
        got = []
        for value in pool:
            got.append(value)
            if len(got) % 7 == 0:
                got.append(pool.next())
        assert got == list(range(1, 301))


# -- timeouts and skip (deterministic: items wait for events the test sets) -------------------
# Thread workers: the items wait for threading.Events while the reader times out, so they need
# workers beside the reader that share the test's memory. An inline pool's timeouts bound the
# wait for its input instead: test_imap_inline.py.

def gated_pool(skip, ordered=True):
    gates = [threading.Event() for _ in range(5)]

    def gated(i):
        gates[i].wait(DEADLINE)
        return i
    pool = IMap(worker_type="thread", worker_num=1, stride=1, skip=skip, ordered=ordered)
    pool.add_task(gated, range(5))
    return pool, gates


def test_timeout_without_skip_keeps_the_result():
    pool, gates = gated_pool(skip=False)
    with pool:
        pool.start()
        with pytest.raises(TimeoutError):
            pool.next(timeout=0.05)
        with pytest.raises(TimeoutError):
            pool.next(block=False)
        gates[0].set()
        assert pool.next(timeout=DEADLINE) == 0
        for gate in gates[1:]:
            gate.set()
        assert list(pool) == [1, 2, 3, 4]


def test_timeout_with_skip_drops_that_position():
    pool, gates = gated_pool(skip=True)
    with pool:
        pool.start()
        with pytest.raises(TimeoutError):
            pool.next(timeout=0.05)           # position 0 given up
        gates[0].set()
        gates[1].set()
        assert pool.next(timeout=DEADLINE) == 1
        with pytest.raises(TimeoutError):
            pool.next(timeout=0.05)           # position 2 given up
        with pytest.raises(TimeoutError):
            pool.next(timeout=0.05)           # position 3 given up
        for gate in gates[2:]:
            gate.set()
        assert pool.next(timeout=DEADLINE) == 4
        with pytest.raises(StopIteration):
            pool.next(timeout=DEADLINE)


def test_timeout_with_skip_unordered_drops_the_next_result():
    pool, gates = gated_pool(skip=True, ordered=False)
    with pool:
        pool.start()
        with pytest.raises(TimeoutError):
            pool.next(timeout=0.05)
        for gate in gates:
            gate.set()
        assert sorted(pool) == [1, 2, 3, 4]


def test_task_iterator_uses_the_task_timeout():
    gate = threading.Event()

    def gated(i):
        gate.wait(DEADLINE)
        return i
    pool = IMap(worker_type="thread", worker_num=1)
    results = pool.add_task(gated, range(2), timeout=0.05)
    with pool:
        pool.start()
        with pytest.raises(TimeoutError):
            next(results)
        gate.set()
        assert results.next(timeout=DEADLINE) == 0
        assert list(pool.get_task(0, timeout=DEADLINE)) == [1]


def test_skip_in_a_chain_drops_downstream_positions():
    gates = [threading.Event() for _ in range(4)]

    def gated(i):
        gates[i].wait(DEADLINE)
        return i
    pool = IMap(worker_type="thread", worker_num=2, stride=2, skip=True)
    up = pool.add_task(gated, range(4))
    down = pool.add_task(add1, up)
    with pool:
        pool.start()
        with pytest.raises(TimeoutError):
            pool.next(timeout=0.05, task=1)
        for gate in gates:
            gate.set()
        assert list(down) == [2, 3, 4]


# -- stop -----------------------------------------------------------------------------------

def test_stop_ends_several_independent_infinite_inputs(pool_options):
    pool = IMap(**pool_options)
    a = pool.add_task(add1, itertools.count())
    b = pool.add_task(sub1, itertools.count())
    pool.start()
    assert [next(a) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert [next(b) for _ in range(5)] == [-1, 0, 1, 2, 3]
    started = time.monotonic()
    pool.stop(ends=[0, 1])
    assert time.monotonic() - started < DEADLINE
    assert not pool.started


class NeverReady:
    """A BatchSource that never has an item (and never ends)."""

    def take(self, count):
        return []

    def notify(self, wake):
        pass


def test_stop_wakes_a_blocked_reader(pool_options):
    """A reader blocked in next() when stop() is called gets the stop's own RuntimeError; a
    reader that comes after stop() gets another one ('not started'): the error text proves
    which of the two happened."""
    pool = IMap(add1, NeverReady(), **pool_options)
    errors = []

    def read():
        try:
            pool.next()
        except RuntimeError as exc:
            errors.append(exc)
    reader = threading.Thread(target=read)
    reader.start()
    feeder = pool._feeder
    wait_until(lambda: feeder._starving == 1)   # the reader waits for an item not fed yet
    pool.stop()
    reader.join(DEADLINE)
    assert not reader.is_alive()
    assert len(errors) == 1 and "was stopped" in str(errors[0])
    with pytest.raises(RuntimeError) as late:
        pool.next()
    assert "was stopped" not in str(late.value) and "not started" in str(late.value)


def test_input_that_raises_gives_an_error_in_place(pool_options):
    def source():
        yield 1
        yield 2
        raise OSError("disk gone")
    with IMap(add1, source(), **pool_options) as pool:
        assert pool.next() == 2
        assert pool.next() == 3
        with pytest.raises(OSError, match="disk gone"):
            pool.next()
        with pytest.raises(StopIteration):
            pool.next()


# -- more of the original test list -----------------------------------------------------------

def test_two_chains_one_reading_task_0_through_get_task(pool_options):
    """Original test_2_chained_2_chained: two chains read in turns, and a fifth task reads
    task 0's results through another iterator, so task 0's results are split between two
    readers. The weave gives task 0 one stride per round, which is not enough for both: the
    feeder then feeds task 0 out of turn instead of waiting forever (an inline pool simply
    evaluates task 0 for whichever reader asks)."""
    pool = IMap(**pool_options, stride=3)
    t0 = pool.add_task(add1, range(60))
    t1 = pool.add_task(sub1, t0)
    t2 = pool.add_task(add1, range(30))
    t3 = pool.add_task(sub1, t2)
    t4 = pool.add_task(add1, pool.get_task(0))
    with pool:
        pool.start()
        a, b, c = [], [], []
        for _ in range(30):            # every reader in step (rule 5 of docs/imap.md)
            a.append(next(t1))
            b.append(next(t3))
            c.append(next(t4))
        assert list(t1) == [] and list(t4) == []
    assert b == list(range(30))
    assert sorted(a + [x - 2 for x in c]) == list(range(60))


def test_stop_after_three_results_of_a_longer_input(pool_options):
    pool = IMap(add1, range(99), **pool_options, stride=17)
    assert [pool.next(), pool.next(), pool.next()] == [1, 2, 3]
    pool.stop(ends=[0])
    with pytest.raises(RuntimeError):
        pool.next()


def identity(x):
    return x


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def test_reference_timeout_values_with_skip():
    """Reference §1.6: one worker, ordered, sleeps [.5, .3, .5, .5, .1], skip=True; all
    times x4 here, so every expected outcome has a margin of 0.2 s or more. Items must run
    beside the reader while it times out, and the test takes 8 s: on one kind (threads);
    the gated tests above check the same rules without sleeping."""
    pool = IMap(worker_type="thread", worker_num=1, skip=True)
    pool.add_task(sleep_for, [2.0, 1.2, 2.0, 2.0, 0.4])
    outcome = []
    with pool:
        pool.start()
        while True:
            try:
                outcome.append(pool.next(timeout=1.8))
            except TimeoutError:
                outcome.append("T")
            except StopIteration:
                break
    # 2 s items time out (1.8 s); their late results are dropped, not handed out
    assert outcome == ["T", 1.2, "T", "T", 0.4]


def test_reading_one_task_far_ahead_keeps_the_buffer_for_it(pool_options, caplog):
    """Each task holds at most its share of the buffer (the buffer less a stride per other
    task), so reading one task to its end first needs no slot beyond the buffer."""
    pool = IMap(**pool_options.with_workers(1), stride=2, buffer=4)
    left = pool.add_task(add1, range(20))
    right = pool.add_task(sub1, range(20))
    with pool:
        pool.start()
        for expected in range(-1, 19):               # left is not read at all meanwhile
            assert next(right) == expected
            assert pool.buffer_used <= 4
        assert list(left) == list(range(1, 21))
    assert "going over the buffer" not in caplog.text


def test_reading_one_task_far_ahead_overdraws_when_it_has_no_share_left(pool_options, caplog):
    """buffer == stride: one task may fill the whole buffer; reading the other one first
    then needs slots beyond the buffer, one at a time, with a warning (rule 5). An inline
    pool reads nothing ahead, so it never needs to overdraw."""
    if pool_options.kind == "inline":
        pytest.skip("an inline pool reads nothing ahead: it never overdraws")
    pool = IMap(**pool_options.with_workers(1), stride=2, buffer=2)
    left = pool.add_task(add1, range(20))
    right = pool.add_task(sub1, range(20))
    with pool, pytest.warns(RuntimeWarning, match="going over the buffer"):
        pool.start()
        assert list(right) == list(range(-1, 19))   # left is not read at all meanwhile
        assert list(left) == list(range(1, 21))
    assert "going over the buffer" in caplog.text


# -- inputs that wait for data ------------------------------------------------------------------

def trickle(count, gap, cooperative):
    for _ in range(count):
        if cooperative:
            waiting_for_input()
        time.sleep(gap)
        yield time.monotonic()


@pytest.mark.parametrize("cooperative", [False, True])
def test_items_of_a_slow_input_are_not_held_back_for_a_full_batch(cooperative):
    """The reader thread of an input that waits hands each item over at once (reader threads
    are the same on every kind with a feeder; an inline pool has none): on threads."""
    def identity(x):
        return x
    # warm the batch size up with fast items first, then trickle
    with IMap(identity, itertools.chain(iter([0.0] * 5000), trickle(20, 0.05, cooperative)),
              worker_type="thread", worker_num=2) as pool:
        delays = [time.monotonic() - sent for sent in pool if sent]
    assert len(delays) == 20
    assert max(delays) < 1.0   # one inter-arrival gap plus scheduling, never a whole batch


def test_a_cooperative_input_sends_its_items_before_it_waits(pool_options):

    def burst_then_wait(release):
        for _ in range(100):
            yield time.monotonic()
        waiting_for_input()
        release.wait(DEADLINE)

    release = threading.Event()
    with IMap(identity, burst_then_wait(release), **pool_options) as pool:
        got = [pool.next(timeout=DEADLINE) for _ in range(100)]   # before the input goes on
        release.set()
        assert list(pool) == []
    assert len(got) == 100


def test_in_memory_inputs_behind_zip_map_enumerate_are_read_in_bulk():
    """How inputs are classified (no pool runs)."""
    from imap._inputs import _is_chained, _is_steady
    assert _is_steady(iter([1])) and _is_steady(enumerate([1, 2]))
    assert _is_steady(zip(range(3), [1, 2], strict=False)) and _is_steady(map(abs, [1]))
    assert not _is_steady(x for x in [1]) and not _is_steady(enumerate(x for x in [1]))
    pool = IMap(worker_type="thread", worker_num=1)
    assert _is_chained(enumerate(pool.add_task(add1, [1])))


def test_a_slow_start_does_not_keep_the_batches_tracked_for_long():
    """The first batches on a worker pay for its start (imports, opening files): a faster
    measurement of the time per item weighs more than a slower one, so a slow first item
    does not keep the batches small and evaluated item by item (tracked) for long; a
    slower measurement still tracks the next batches at once."""
    from imap._task import Task
    from imap.backends.base import TaskSpec
    task = Task(0, TaskSpec(0, abs))
    assert task.tracked_mode(1000)                   # nothing measured yet
    task.learn(1, 0.002, cap=100_000)                # a first item of 2 ms: the start
    assert task.tracked_mode(1000)
    for _ in range(4):                               # then items of 5 µs
        task.learn(task.batch_size, task.batch_size * 5e-6, cap=100_000)
    assert not task.tracked_mode(1000)
    task.learn(10, 0.01, cap=100_000)                # items of 1 ms again
    assert task.tracked_mode(1000)
