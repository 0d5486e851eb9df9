"""Task queues (IMap.queue), imap.execute(), and errors that say where they came from
(.item, .traceback, __cause__) on thread, process and remote pools (issue 15)."""
import functools
import gc
import operator
import threading

import pytest

from imap import IMap, QueueClosedError, RemoteTraceback, TaskQueue, execute

DEADLINE = 30.0     # a generous bound against hangs, never a speed check


@pytest.fixture
def pool(pool_options):
    imap = IMap(**pool_options)
    imap.start()
    yield imap
    imap.stop()


# -- queues ---------------------------------------------------------------------------------

def test_push_and_pop_on_every_pool_kind(pool):
    with pool.queue(abs) as queue:
        for x in range(-20, 0):
            queue.push(x)
        got = [queue.pop(timeout=DEADLINE) for _ in range(20)]
    assert sorted(got) == list(range(1, 21))


def test_an_ordered_queue_keeps_the_push_order(pool):
    with pool.queue(abs, ordered=True) as queue:
        for x in range(-50, 0):
            queue.push(x)
        assert [queue.pop(timeout=DEADLINE) for _ in range(50)] == list(range(50, 0, -1))


def test_a_queue_of_calls_and_the_queues_own_timeout_keyword(pool):
    with pool.queue(ordered=True) as queue:
        queue.push(divmod, 7, 2)
        queue.push(int, "ff", base=16)
        queue.push(dict, a=1, timeout=DEADLINE)              # timeout: the push's own
        queue.push(functools.partial(dict, timeout=5))       # a call that takes one
        assert [queue.pop(timeout=DEADLINE) for _ in range(4)] == [
            (3, 1), 255, {"a": 1}, {"timeout": 5}]
        with pytest.raises(TypeError, match="callable"):
            queue.push(5)
        with pytest.raises(TypeError, match="needs a callable"):
            queue.push()


def test_push_on_an_item_queue_takes_one_item(pool):
    with pool.queue(abs) as queue:
        with pytest.raises(TypeError, match="one item"):
            queue.push(1, 2)


def test_errors_are_raised_by_pop_in_place_with_item_and_traceback(pool):
    with pool.queue(ordered=True) as queue:
        queue.push(divmod, 1, 0)
        queue.push(abs, -3)
        with pytest.raises(ZeroDivisionError) as caught:
            queue.pop(timeout=DEADLINE)
        assert caught.value.item == (divmod, (1, 0), {})
        assert "ZeroDivisionError" in caught.value.traceback
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert queue.pop(timeout=DEADLINE) == 3


def test_bounded_push_waits_for_pops_and_times_out():
    gate = threading.Event()

    def gated(x):
        gate.wait(DEADLINE)
        return x

    with IMap(worker_type="thread", worker_num=2) as pool:
        pool.start()
        queue = pool.queue(gated, size=2, ordered=True)
        queue.push(1)
        queue.push(2)
        with pytest.raises(TimeoutError, match="size"):
            queue.push(3, timeout=0.05)            # full: two pushed, none popped
        pushed = threading.Event()

        def third():
            queue.push(3)
            pushed.set()
        pusher = threading.Thread(target=third)
        pusher.start()
        assert not pushed.wait(0.1)                # blocks while the consumer is slow
        gate.set()
        assert queue.pop(timeout=DEADLINE) == 1     # a pop makes room
        assert pushed.wait(DEADLINE)
        pusher.join(DEADLINE)
        assert [queue.pop(timeout=DEADLINE), queue.pop(timeout=DEADLINE)] == [2, 3]
        queue.release()


def test_pop_timeout_keeps_the_result_for_later():
    gate = threading.Event()

    def gated(x):
        gate.wait(DEADLINE)
        return x

    with IMap(worker_type="thread", worker_num=1) as pool:
        pool.start()
        with pool.queue(gated) as queue:
            queue.push(7)
            with pytest.raises(TimeoutError):
                queue.pop(timeout=0.05)
            with pytest.raises(TimeoutError):
                queue.pop_many(timeout=0)
            gate.set()
            assert queue.pop(timeout=DEADLINE) == 7


def test_pop_many_returns_what_is_ready_and_stops_before_an_error():
    release = threading.Event()

    def check(x):
        if x == "last":
            release.wait(DEADLINE)
        if x == "bad":
            raise KeyError(x)
        return x

    with IMap(worker_type="thread", worker_num=2) as pool:
        pool.start()
        with pool.queue(check, ordered=True) as queue:
            for item in ("a", "b", "c", "bad", "d"):
                queue.push(item)
            got = queue.pop_many(timeout=DEADLINE)
            while len(got) < 3:                    # what was ready, then the rest
                got += queue.pop_many(timeout=DEADLINE)
            assert got == ["a", "b", "c"]           # the error ends the list before it
            with pytest.raises(KeyError):
                queue.pop_many(timeout=DEADLINE)   # ... and the next call raises it
            assert queue.pop_many(timeout=DEADLINE) == ["d"]
            with pytest.raises(TimeoutError):
                queue.pop_many(timeout=0.05)       # nothing is ready
            queue.push("last")
            with pytest.raises(TimeoutError):
                queue.pop_many(timeout=0.05)       # not ready yet
            release.set()
            assert queue.pop_many(timeout=DEADLINE) == ["last"]
            for x in range(5):
                queue.push(x)
            got = []
            while len(got) < 5:
                batch = queue.pop_many(timeout=DEADLINE, max=2)
                assert 1 <= len(batch) <= 2
                got += batch
            assert got == list(range(5))
            with pytest.raises(ValueError, match="max"):
                queue.pop_many(max=0)


def test_close_refuses_pushes_and_pop_drains_then_stops(pool):
    queue = pool.queue(abs, ordered=True)
    for x in (-1, -2, -3):
        queue.push(x)
    queue.close()
    with pytest.raises(QueueClosedError):
        queue.push(-4)
    assert issubclass(QueueClosedError, RuntimeError)
    assert [queue.pop(timeout=DEADLINE) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(StopIteration):
        queue.pop(timeout=DEADLINE)
    with pytest.raises(StopIteration):
        queue.pop_many(timeout=DEADLINE)
    assert all(task.spec.func is not abs for task in pool._tasks)   # its task is gone


def test_a_queue_is_usable_before_start_and_alongside_other_tasks():
    pool = IMap(worker_type="thread", worker_num=2)
    queue = pool.queue(abs)
    queue.push(-5)
    other = pool.add_task(operator.neg, range(100))
    with pool:
        pool.start()
        assert queue.pop(timeout=DEADLINE) == 5
        assert list(other) == [-x for x in range(100)]
        late = pool.queue(str)                       # added while the pool runs
        late.push(9)
        assert late.pop(timeout=DEADLINE) == "9"
        queue.release()
        late.release()


def test_many_clients_share_one_pool_through_their_own_queues(pool):
    def client(number, results):
        got = results[number] = []
        with pool.queue(ordered=True, size=4) as queue:
            for i in range(30):
                queue.push(operator.mul, number, i, timeout=DEADLINE)
                if i >= 3:                          # keep at most 4 in the queue
                    got.append(queue.pop(timeout=DEADLINE))
            got += [queue.pop(timeout=DEADLINE) for _ in range(3)]

    results = {}
    clients = [threading.Thread(target=client, args=(n, results)) for n in range(6)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(DEADLINE)
    assert results == {n: [n * i for i in range(30)] for n in range(6)}
    assert pool._tasks == []                         # every queue gave its task back


def test_a_dropped_queue_releases_its_task():
    with IMap(worker_type="thread", worker_num=1) as pool:
        pool.start()
        queue = pool.queue(abs)
        queue.push(-1)
        assert len(pool._tasks) == 1
        del queue
        gc.collect()
        assert pool._tasks == []


def test_a_queue_of_a_stopped_pool_says_so():
    pool = IMap(worker_type="thread", worker_num=1)
    pool.start()
    queue = pool.queue(abs)
    pool.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        queue.pop(timeout=DEADLINE)
    assert isinstance(repr(queue), str) and isinstance(queue, TaskQueue)


# -- execute ----------------------------------------------------------------------------------

def test_execute_on_a_given_pool_leaves_it_running(pool_options):
    pool = IMap(**pool_options)                       # not started: execute starts it
    calls = [(pow, (x, 2)) for x in range(30)] + [functools.partial(abs, -5)]
    with execute(calls, pool=pool, ordered=True, chunksize=4) as results:
        assert list(results) == [x * x for x in range(30)] + [5]
    assert pool.started and pool._tasks == []
    assert sorted(execute(((abs, (-x,), {}) for x in range(10)), pool=pool)) == list(range(10))
    pool.stop()


def test_execute_errors_are_in_place_and_carry_the_call(pool):
    bad = functools.partial(divmod, 1, 0)
    results = execute([(abs, (-1,)), bad, (abs, (-2,))], pool=pool, ordered=True)
    assert next(results) == 1
    with pytest.raises(ZeroDivisionError) as caught:
        next(results)
    assert caught.value.item.func is divmod and caught.value.item.args == (1, 0)
    assert "ZeroDivisionError" in caught.value.traceback
    assert next(results) == 2                        # the iteration goes on
    with pytest.raises(StopIteration):
        next(results)


def test_execute_timeout_then_resume():
    gate = threading.Event()
    pool = IMap(worker_type="thread", worker_num=1)
    results = execute([(gate.wait, (DEADLINE,)), (abs, (-1,))], pool=pool, ordered=True,
                      timeout=0.05)
    with pytest.raises(TimeoutError):
        next(results)
    gate.set()
    assert list(results) == [True, 1]                # nothing was lost
    pool.stop()


def test_execute_on_its_own_process_pool_stops_it_when_closed():
    results = execute((pow, (2, x)) for x in range(10))
    assert next(results) in {2 ** x for x in range(10)}
    results.close()
    with pytest.raises(StopIteration):
        next(results)
    assert sorted(execute([(pow, (2, 3)), (pow, (3, 2))])) == [8, 9]   # ends: stopped too


def test_execute_refuses_bad_arguments():
    with pytest.raises(ValueError, match="chunksize"):
        execute([], pool=IMap(worker_type="thread", worker_num=1), chunksize=0)
    with pytest.raises(ValueError, match="timeout"):
        execute([], timeout=-1)


# -- errors say where they came from (any IMap task) --------------------------------------------

def test_next_errors_carry_a_copy_of_the_item_and_the_worker_traceback(pool):
    item = {"key": 1}
    handle = pool.add_task(operator.itemgetter("missing"), [item])
    with pytest.raises(KeyError) as caught:
        next(handle)
    assert caught.value.item == item and caught.value.item is not item
    assert "itemgetter" in caught.value.traceback or "KeyError" in caught.value.traceback
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert caught.value.traceback.strip() in str(caught.value.__cause__)


def test_an_input_error_carries_a_traceback():
    def broken():
        yield 1
        raise OSError("disk gone")
    with IMap(abs, broken(), worker_type="thread", worker_num=1) as pool:
        assert pool.next() == 1
        with pytest.raises(OSError) as caught:
            pool.next()
    assert "disk gone" in caught.value.traceback and "broken" in caught.value.traceback


def test_timeouts_lose_no_result():
    gates = [threading.Event() for _ in range(3)]

    def gated(i):
        gates[i].wait(DEADLINE)
        return i

    with IMap(worker_type="thread", worker_num=3) as pool:
        pool.start()
        with pool.queue(gated) as queue:
            for i in range(3):
                queue.push(i)
            gates[0].set()
            gates[2].set()
            got = [queue.pop(timeout=DEADLINE), queue.pop(timeout=DEADLINE)]
            with pytest.raises(TimeoutError):
                queue.pop(timeout=0.05)
            gates[1].set()
            got.append(queue.pop(timeout=DEADLINE))
    assert sorted(got) == [0, 1, 2]
