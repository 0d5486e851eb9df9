"""The run layer (papy._run): a Plumber as a context manager, runs in one call, iterators
that follow the protocol, shapes that hung the old layer, the bounded buffers, and every
lifecycle call from several threads at once."""
import itertools
import random
import threading
import time

import pytest

from papy import IMap, Piper, PiperError, Plumber, PlumberError


def inc(inbox):
    return inbox[0] + 1


def double(inbox):
    return inbox[0] * 2


def add(inbox):
    return inbox[0] + inbox[1]


def fails_on_3(inbox):
    if inbox[0] == 3:
        raise ValueError("three")
    return inbox[0]


def slow_identity(inbox):
    time.sleep(0.001)
    return inbox[0]


@pytest.fixture
def pool(make_parallel):
    """A Piper's ``parallel=``: linear, then an IMap of every kind (tests/conftest.py)."""
    return make_parallel(stride=4)


def diamond(pool):
    source = Piper(inc, parallel=pool, name="source")
    left = Piper(inc, parallel=pool, name="left", branch=1)
    right = Piper(double, parallel=pool, name="right", branch=2)
    join = Piper(add, parallel=pool, name="join")
    plumber = Plumber()
    plumber.add_pipes([(source, left, join), (source, right, join)])
    return plumber, join


def expected_diamond(data):
    return [(x + 1) + 1 + (x + 1) * 2 for x in data]


# -- one call, context manager ------------------------------------------------------------

def test_collect_runs_to_the_end_and_stops(pool):
    plumber, join = diamond(pool)
    assert plumber.collect([range(30)]) == {join: expected_diamond(range(30))}
    assert plumber.state.value == "idle"
    assert plumber.stats["pipers"][join].items_out == 30
    assert plumber.collect([range(3)]) == {join: expected_diamond(range(3))}   # again


def test_collect_gives_every_output():
    first, second, third = Piper(inc, name="a"), Piper(double, name="b"), Piper(inc, name="c")
    plumber = Plumber()
    plumber.add_pipes([(first, second), (first, third)])
    assert plumber.collect([[1, 2]]) == {second: [4, 6], third: [3, 4]}


def test_stream_yields_the_output_as_it_comes(pool):
    plumber, join = diamond(pool)
    stream = plumber.stream([range(20)])
    assert iter(stream) is stream
    assert list(stream) == expected_diamond(range(20))
    assert plumber.state.value == "idle"


def test_closing_a_stream_early_stops_the_run(pool):
    plumber, join = diamond(pool)
    stream = plumber.stream([itertools.count()])
    assert [next(stream) for _ in range(5)] == expected_diamond(range(5))
    stream.close()
    assert plumber.state.value == "idle"
    assert pool is False or not pool.started


def test_stream_with_several_outputs_needs_one_named():
    first, second, third = Piper(inc), Piper(double), Piper(inc)
    plumber = Plumber()
    plumber.add_pipes([(first, second), (first, third)])
    with pytest.raises(PlumberError, match="name one"):
        plumber.stream([[1]])
    assert list(plumber.stream([[1, 2]], output=third)) == [3, 4]


def test_collect_raises_the_failures_after_stopping():
    left, right, join = Piper(inc), Piper(inc), Piper(add)
    plumber = Plumber()
    plumber.add_pipes([(left, join), (right, join)])
    with pytest.raises(PiperError, match="different lengths"):
        plumber.collect([range(3), range(5)])
    assert plumber.state.value == "idle"


def test_a_plumber_is_a_context_manager(pool):
    with Plumber() as plumber:
        plumber.add_pipe((Piper(inc, parallel=pool), Piper(double, parallel=pool,
                                                            track=True)))
        plumber.start([range(10)])
        plumber.run()
    assert plumber.state.value == "idle"        # the block stopped the run, gracefully
    tracked = list(plumber.stats["pipers_tracked"].values())[0]
    assert tracked == {i: 2 * (i + 1) for i in range(10)}
    assert pool is False or not pool.started


def test_leaving_the_block_raises_the_failures_of_the_run():
    left, right, join = Piper(inc), Piper(inc), Piper(add)
    with pytest.raises(PiperError, match="different lengths"):
        with Plumber() as plumber:
            plumber.add_pipes([(left, join), (right, join)])
            plumber.start([range(3), range(5)])
            plumber.run()
    assert plumber.state.value == "idle"


def test_an_exception_in_the_block_stops_the_run_at_once_and_propagates(pool):
    class BoomError(Exception):
        pass

    with pytest.raises(BoomError):
        with Plumber() as plumber:
            plumber.add_pipe((Piper(slow_identity, parallel=pool), Piper(inc)))
            plumber.start([itertools.count()])       # endless: only a forced stop ends it
            plumber.run()
            raise BoomError()
    assert plumber.state.value == "idle"
    assert pool is False or not pool.started


# -- iterators follow the protocol ----------------------------------------------------------

def test_a_piper_is_an_iterator(pool):
    piper = Piper(inc, parallel=pool).connect([range(5)])
    piper.start()
    assert iter(piper) is piper
    assert next(piper) == 1
    assert list(piper) == [2, 3, 4, 5]          # one position for next() and iteration
    with pytest.raises(StopIteration):
        next(piper)
    piper.stop()
    piper.disconnect()


# -- shapes that hung the old layer ------------------------------------------------------

@pytest.mark.parametrize("strides", [(1, 3), (3, 1), (1, 1), (4, 2)])
def test_fan_out_and_join_over_two_imaps_with_any_strides(pool_options, strides):
    """The chaos trial's reproducer: the branch IMap's stride larger than the join's hung."""
    p1 = IMap(**pool_options, stride=strides[0])
    p2 = IMap(**pool_options, stride=strides[1])
    try:
        a = Piper(inc, parallel=p1)
        b = Piper(inc, parallel=p2, branch=1)
        c = Piper(inc, branch=2)
        d = Piper(add, parallel=p1)
        plumber = Plumber()
        plumber.add_pipes([(a, b, d), (a, c, d)])
        plumber.start([range(50)])
        assert list(d) == [2 * (x + 2) for x in range(50)]
        plumber.stop()
    finally:
        p1.stop()
        p2.stop()


def test_a_chain_that_returns_to_an_earlier_imap(pool_options):
    one = IMap(**pool_options, stride=1)
    two = IMap(**pool_options, stride=3)
    try:
        plumber = Plumber()
        last = Piper(inc, parallel=one)
        plumber.add_pipe((Piper(inc, parallel=one), Piper(inc, parallel=two), last))
        assert plumber.collect([range(40)]) == {last: [x + 3 for x in range(40)]}
    finally:
        one.stop()
        two.stop()


# -- bounded buffers -------------------------------------------------------------------------

def test_no_imap_holds_more_than_its_buffer_with_a_slow_output(pool_options):
    """count() -> A -> {B, C} -> D -> a slow output, A and D on one IMap, B and C on
    another: every IMap stays within its buffer while the output lags."""
    one = IMap(**pool_options, stride=8, buffer=32)
    two = IMap(**pool_options, stride=8, buffer=32)
    try:
        a = Piper(inc, parallel=one)
        b, c = Piper(inc, parallel=two, branch=1), Piper(double, parallel=two, branch=2)
        d = Piper(add, parallel=one)
        out = Piper(slow_identity)
        plumber = Plumber()
        plumber.add_pipes([(a, b, d, out), (a, c, d)])
        plumber.plunge([itertools.count()])
        seen = []
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            seen.append((one.buffer_used, two.buffer_used))
            time.sleep(0.005)
        plumber.chinkup()
    finally:
        one.stop()
        two.stop()
    assert seen and all(u1 <= 32 and u2 <= 32 for u1, u2 in seen if u1 is not None
                        and u2 is not None)
    assert plumber.stats["pipers"][out].items_out > 0


# -- every lifecycle call from several threads ------------------------------------------

def test_lifecycle_calls_from_several_threads_are_legal_or_plumber_errors(pool_options):
    """The Plumber's lifecycle, the same on every kind; on the kinds whose start costs 0.1 s
    or more (process, remote, dask) 240 random calls restart it too slowly for the suite."""
    if pool_options.kind not in ("inline", "thread"):
        pytest.skip(f"{pool_options.kind} pools take too long to restart this often")
    pool = IMap(**pool_options, stride=4)
    output = Piper(inc, parallel=pool)
    plumber = Plumber()
    plumber.add_pipe((Piper(inc, parallel=pool), output))
    calls = {
        "start": lambda: plumber.start([range(200)]),
        "run": plumber.run,
        "pause": plumber.pause,
        "wait": lambda: plumber.wait(0.01),
        "stop": plumber.stop,
        "chinkup": plumber.chinkup,
        "read": lambda: next(output, None),
    }
    unexpected = []

    def fuzz(seed):
        rng = random.Random(seed)
        for _ in range(60):
            name = rng.choice(sorted(calls))
            try:
                calls[name]()
            except (PlumberError, PiperError):
                pass
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                unexpected.append((name, exc))

    threads = [threading.Thread(target=fuzz, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not any(t.is_alive() for t in threads), "a lifecycle call hung"
        assert unexpected == []
        if plumber.state.value != "idle":
            plumber.chinkup()
        assert plumber.state.value == "idle"
        plumber.collect([range(5)])              # still usable
    finally:
        pool.stop()


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), -1, 0, "1", True])
def test_a_piper_timeout_is_checked_like_every_number_of_seconds(bad):
    with IMap(worker_type="thread", worker_num=1) as pool:
        with pytest.raises((ValueError, TypeError), match="timeout"):
            Piper(inc, parallel=pool, timeout=bad)


def test_a_timeout_on_a_linear_piper_is_a_warning():
    with pytest.warns(UserWarning, match="parallel Pipers only"):
        Piper(inc, timeout=1)


class KillsTheWorkerThatLoadsIt:
    """An argument whose unpickling ends the process: every worker dies loading the task."""

    def __reduce__(self):
        import os
        return (os._exit, (3,))


def passes(inbox, _=None):
    return inbox[0]


def test_a_broken_pool_is_one_failure_of_the_run_not_a_flood(caplog):
    """Workers that die before they do any work break the pool (imap.BrokenPoolError): the
    run fails once with that cause (collect() raises it), the items left are errors in
    place, and the breakage is logged once, not once per item."""
    import logging

    from imap import BrokenPoolError
    from papy import Worker
    caplog.set_level(logging.ERROR)
    with IMap(worker_type="process", worker_num=2) as pool:
        out = Piper(Worker(passes, (KillsTheWorkerThatLoadsIt(),)), parallel=pool,
                    track=True, name="out")
        plumber = Plumber()
        plumber.add_pipe((out,))
        with pytest.raises(BrokenPoolError, match="exited with code 3"):
            plumber.collect([range(200)])
    tracked = plumber.stats["pipers_tracked"][out]
    assert tracked and all(isinstance(v, PiperError) for v in tracked.values())
    assert all(isinstance(v.args[0], BrokenPoolError) for v in tracked.values())
    papy_errors = [r for r in caplog.records if r.name.startswith("papy")]
    assert len(papy_errors) == 1, [r.getMessage()[:80] for r in papy_errors]
