"""Piper on its own: flags, lifecycle misuse, shared IMaps, errors, timeouts, tracking
(the original test_Piper, on linear Pipers and every kind of IMap)."""
import logging
import threading
import time

import pytest

from papy import IMap, Piper, PiperError, WorkerError


def square(inbox):
    return inbox[0] * inbox[0]


def inc(inbox):
    return inbox[0] + 1


def fails_on_none(inbox):
    return inbox[0] + 1


def join_sum(inbox):
    return inbox[0] + inbox[1]


@pytest.fixture
def pool(make_parallel):
    """A Piper's ``parallel=``: linear, then an IMap of every kind (tests/conftest.py)."""
    return make_parallel(stride=2)


def test_initial_flags():
    piper = Piper(square)
    assert not piper.connected and not piper.started and not piper.finished
    assert piper.tees == []
    assert piper.imap is map and piper.parallel is False and piper.stride == 1
    assert piper.name == "square"                   # the function's name by default
    assert repr(piper) == f"Piper({piper.name})"


def test_pipers_of_one_function_are_distinct_but_their_workers_equal():
    first, second = Piper(square), Piper(square)
    assert first != second
    assert first.worker == second.worker
    assert Piper(first).worker is first.worker      # a Piper gives its Worker


def test_bad_arguments():
    with pytest.raises(PiperError):
        Piper(1)
    with pytest.raises(PiperError):
        Piper(square, parallel="yes")
    with pytest.raises(ValueError):
        Piper(square, consume=0)
    with pytest.raises(ValueError):
        Piper(square, produce=1.5)
    with pytest.raises(ValueError):
        Piper(square, parallel=False, timeout=-1)


def test_lifecycle_misuse(pool):
    piper = Piper(square, parallel=pool)
    with pytest.raises(PiperError, match="not connected"):
        piper.start()
    with pytest.raises(PiperError, match="not started"):
        next(piper)
    with pytest.raises(PiperError, match="not started"):
        piper.stop()
    with pytest.raises(PiperError, match="not connected"):
        piper.disconnect()
    piper.connect([range(3)])
    with pytest.raises(PiperError, match="already connected"):
        piper.connect([range(3)])
    piper.start()
    with pytest.raises(PiperError, match="already started"):
        piper.start()
    with pytest.raises(PiperError, match="started"):
        piper.disconnect()
    with pytest.raises(PiperError, match="not finished"):
        piper.stop()
    assert list(piper) == [0, 1, 4]
    assert piper.finished
    piper.stop()
    assert not piper.started and piper.connected
    piper.disconnect()
    assert not piper.connected


def test_connect_takes_a_list_of_inputs():
    piper = Piper(square)
    with pytest.raises(PiperError):
        piper.connect(range(3))         # not a list of inputs
    with pytest.raises(PiperError):
        piper.connect([])
    with pytest.raises(PiperError):
        piper.connect([1])


def test_call_is_connect_and_the_cycle_repeats(pool):
    piper = Piper(square, parallel=pool)
    for round_ in range(6):     # each round restarts the pool: a few rounds say as much
        assert piper([range(round_)]) is piper
        piper.start()
        assert list(piper) == [i * i for i in range(round_)]
        piper.stop()
        piper.disconnect()


def test_empty_and_single_inputs(pool):
    for data, expected in (([], []), ([3], [9])):
        piper = Piper(square, parallel=pool)
        piper.connect([data])
        piper.start()
        assert list(piper) == expected
        piper.stop()
        piper.disconnect()


def test_linked_pipers(pool):
    first, second = Piper(inc, parallel=pool), Piper(square, parallel=pool)
    first.connect([range(5)])
    second.connect([first])
    assert first.tees and not second.tees
    first.start()
    second.start()
    with pytest.raises(PiperError, match="read by downstream"):
        next(first)
    assert list(second) == [(i + 1) ** 2 for i in range(5)]
    second.stop()
    if pool is False:
        first.stop(forced=True)
    else:
        assert not pool.started         # stopping one Piper stopped the shared IMap
        first.stop(forced=True)
    second.disconnect()
    first.disconnect()


def test_disconnect_order_on_a_shared_imap(pool_options):
    with IMap(**pool_options, stride=2) as imap:
        first, second = Piper(inc, parallel=imap), Piper(square, parallel=imap)
        first.connect([range(3)])
        second.connect([first])
        with pytest.raises(PiperError, match="not the last"):
            first.disconnect()
        second.disconnect()
        first.disconnect()
        first.connect([range(3)])
        second.connect([first])
        first.disconnect(forced=True)   # removes every task of the IMap
        with pytest.raises(PiperError, match="already connected"):
            second.connect([first])


def test_two_pipers_on_separate_inputs_of_one_imap(pool_options):
    with IMap(**pool_options, stride=2) as imap:
        left, right = Piper(inc, parallel=imap), Piper(square, parallel=imap)
        left.connect([range(6)])
        right.connect([range(6)])
        left.start()
        right.start()
        assert [(next(left), next(left), next(right), next(right)) for _ in range(3)] == \
            [(1, 2, 0, 1), (3, 4, 4, 9), (5, 6, 16, 25)]


def test_function_errors_are_values_in_place(pool, caplog):
    piper = Piper(fails_on_none, parallel=pool)
    piper.connect([[1, None, 3]])
    piper.start()
    first, error, third = list(piper)
    assert (first, third) == (2, 4)
    assert isinstance(error, PiperError)
    assert isinstance(error.args[0], WorkerError)
    assert isinstance(error.args[0].exception, TypeError)
    assert piper.counters.errors == 1 and piper.counters.items_out == 3
    assert "fails_on_none" in caplog.text
    assert any(r.name.split(".")[0] == "papy" and r.levelno == logging.ERROR
               for r in caplog.records)       # the loggers are named __name__, under "papy"
    piper.stop()


def test_debug_raises(pool):
    piper = Piper(fails_on_none, parallel=pool, debug=True)
    piper.connect([[1, None, 3]])
    piper.start()
    assert next(piper) == 2
    with pytest.raises(PiperError):
        next(piper)
    assert next(piper) == 4             # the stream goes on after the raise
    piper.stop(forced=True)


def test_errors_nest_through_pipers(pool):
    first, second = Piper(fails_on_none, parallel=pool), Piper(square, parallel=pool)
    first.connect([[None, 1]])
    second.connect([first])
    first.start()
    second.start()
    error, value = list(second)
    assert value == 4
    assert isinstance(error, PiperError)                          # made by second's Worker
    assert isinstance(error.args[0], PiperError)                  # first's item
    assert isinstance(error.args[0].args[0], WorkerError)
    assert isinstance(error.args[0].args[0].args[0], TypeError)
    second.stop(forced=True)
    first.stop(forced=True)


def test_track(pool):
    piper = Piper(square, parallel=pool, track=True)
    piper.connect([range(10)])
    piper.start()
    assert list(piper) == [i * i for i in range(10)]
    assert piper.tracked == {i: i * i for i in range(10)}
    piper.stop()


def test_counters(pool):
    piper = Piper(square, parallel=pool)
    piper.connect([range(7)])
    piper.start()
    list(piper)
    counters = piper.counters
    assert (counters.items_in, counters.items_out, counters.errors) == (7, 7, 0)
    assert counters["items_in"] == 7 and counters.time_busy >= 0
    piper.stop()


def sleeps_20ms(inbox):
    import time
    time.sleep(0.02)
    return inbox[0]


def test_time_busy_is_measured_where_the_worker_runs(make_parallel):
    piper = Piper(sleeps_20ms, parallel=make_parallel(stride=2))
    piper.connect([range(5)])
    piper.start()
    assert list(piper) == list(range(5))
    assert piper.counters.time_busy >= 5 * 0.02 * 0.9
    piper.stop()


def test_join_inputs_of_different_lengths_end_with_an_error(pool):
    piper = Piper(join_sum, parallel=pool)
    piper.connect([range(5), range(3)])
    piper.start()
    results = []
    with pytest.raises(PiperError, match="different lengths"):   # raised at the end
        for item in piper:
            results.append(item)
    assert results[:3] == [0, 2, 4]
    # the inputs are read in batches: the longer one was read to its end (5 items) before
    # the mismatch showed (the original read item by item and stopped after one more);
    # every item read beyond the shorter input is an error in place
    assert len(results) == 5
    assert all(isinstance(r, PiperError) and "different lengths" in str(r.args[0])
               for r in results[3:])
    piper.stop(forced=True)


GATE = threading.Event()


def blocks_on_one(inbox):
    if inbox[0] == 1:
        GATE.wait(30)
    return inbox[0]


def stuck_on_one(inbox):
    if inbox[0] == 1:
        time.sleep(30)
    return inbox[0]


def test_timeout_kills_a_stuck_item_in_a_process_pool():
    with IMap(worker_type="process", worker_num=2, stride=1) as imap:
        piper = Piper(stuck_on_one, parallel=imap, timeout=1.0)
        piper.connect([range(4)])
        piper.start()
        started = time.monotonic()
        results = list(piper)
        assert time.monotonic() - started < 20      # did not wait for the 30 s item
        assert results[0] == 0 and results[2:] == [2, 3]
        assert isinstance(results[1], PiperError) and isinstance(results[1].args[0],
                                                                  TimeoutError)
        assert "killed" in str(results[1].args[0])
        piper.stop()


@pytest.mark.parametrize("skip", [False, True])
def test_timeout_is_an_error_in_place(skip):
    """The item waits for an Event the test sets after the timeout: thread workers (they
    share the test's memory); the inline pool's Piper timeout: test_imap_inline.py."""
    GATE.clear()
    with IMap(worker_type="thread", worker_num=2, stride=1, skip=skip) as imap:
        piper = Piper(blocks_on_one, parallel=imap, timeout=1.0)
        piper.connect([range(3)])
        piper.start()
        assert next(piper) == 0
        late = next(piper)
        assert isinstance(late, PiperError) and isinstance(late.args[0], TimeoutError)
        GATE.set()
        rest = list(piper)
        # the item was stopped (abandoned on threads): no late extra result, whatever skip
        assert rest == [2]
        piper.stop()


def interrupts_on_30(inbox):
    if inbox[0] == 30:
        raise KeyboardInterrupt("not a real Ctrl-C")
    return inbox[0] + 1


def test_a_base_exception_of_a_function_is_an_error_in_place(pool):
    """What a function raises that is not an Exception (KeyboardInterrupt, SystemExit, ...)
    fails only its item, on every kind of Piper; the stream goes on. (Replaces a test of
    the old stream layer, whose upstream stream could raise into its reader.)"""
    upstream = Piper(interrupts_on_30, parallel=pool).connect([[1, 2, 30, 4]])
    downstream = Piper(inc).connect([upstream])
    upstream.start()
    downstream.start()
    results = list(downstream)
    assert results[:2] == [3, 4] and results[3] == 6 and len(results) == 4
    assert isinstance(results[2], PiperError) and isinstance(results[2].args[0], PiperError)
    assert isinstance(results[2].args[0].args[0], KeyboardInterrupt)
    downstream.stop()
    upstream.stop(forced=True)


def slow_square(inbox):
    time.sleep(0.01)
    return inbox[0] ** 2


def quick_identity(inbox):
    return inbox[0]


def test_counters_include_the_time_spent_waiting_for_results(pool_options):
    """An inline pool's items are evaluated by the scheduler itself: it never waits."""
    if pool_options.kind == "inline":
        pytest.skip("the scheduler evaluates an inline pool's items: it never waits for them")
    from papy import Plumber
    with IMap(**pool_options.with_workers(1)) as imap:
        squares = Piper(slow_square, parallel=imap, name="squares")
        linear = Piper(quick_identity, name="linear")
        plumber = Plumber()
        plumber.add_pipe((squares, linear))
        plumber.start([range(20)])
        plumber.run()
        plumber.wait()
        plumber.pause()
        plumber.stop()
    counters = plumber.stats["pipers"]
    assert counters[squares].time_waiting > 0.05      # 20 x 10 ms on one worker, read fast
    assert counters[linear].time_waiting == 0.0       # linear: evaluated by its reader
    assert counters[squares]["time_waiting"] == counters[squares].time_waiting
