"""Whole pipelines against a sequential run: a diamond on one shared IMap, a fan-out to three
outputs, mixed IMaps, and random linear chains (hypothesis); linear and on every kind of
IMap (``parallel``, ``make_parallel``: tests/conftest.py)."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papy import IMap, Piper, PiperError, Plumber, Worker


def inc(inbox):
    return inbox[0] + 1


def square(inbox):
    return inbox[0] * inbox[0]


def negate(inbox):
    return -inbox[0]


def halve(inbox):
    return inbox[0] / 2


def join_diff(inbox):
    return inbox[0] - inbox[1]


def reciprocal(inbox):
    return 1 / inbox[0]


FUNCTIONS = {"inc": (inc, lambda x: x + 1), "square": (square, lambda x: x * x),
             "negate": (negate, lambda x: -x), "halve": (halve, lambda x: x / 2)}


@pytest.fixture
def pool(parallel):
    """A Piper's ``parallel=``: linear, then an IMap of every kind (tests/conftest.py)."""
    return parallel


def run(plumber, datas):
    plumber.start(datas)
    plumber.run()
    plumber.wait()
    plumber.pause()
    plumber.stop()
    return plumber.stats["pipers_tracked"]


def values(tracked: dict) -> list:
    return [tracked[i] for i in range(len(tracked))]


def test_diamond_on_one_shared_imap(pool):
    source = Piper(inc, parallel=pool, name="source")
    left = Piper(square, parallel=pool, name="left", branch=1)
    right = Piper(negate, parallel=pool, name="right", branch=2)
    join = Piper(join_diff, parallel=pool, name="join", track=True)
    plumber = Plumber()
    plumber.add_pipes([(source, left, join), (source, right, join)])
    data = range(50)
    assert values(run(plumber, [data])[join]) == [(x + 1) ** 2 + (x + 1) for x in data]


def test_join_order_follows_branch(pool):
    source = Piper(inc, parallel=pool)
    first = Piper(square, parallel=pool, branch=2)
    second = Piper(negate, parallel=pool, branch=1)
    join = Piper(join_diff, parallel=pool, track=True)
    plumber = Plumber()
    plumber.add_pipes([(source, first, join), (source, second, join)])
    # branch 1 (negate) is inbox[0], branch 2 (square) is inbox[1]
    assert values(run(plumber, [range(10)])[join]) == [-(x + 1) - (x + 1) ** 2
                                                      for x in range(10)]


def test_fan_out_to_three_outputs(pool):
    source = Piper(inc, parallel=pool, name="source")
    outputs = [Piper(f, parallel=pool, name=name, track=True)
               for name, (f, _) in FUNCTIONS.items() if name != "inc"]
    plumber = Plumber()
    plumber.add_pipes([(source, out) for out in outputs])
    tracked = run(plumber, [range(60)])
    for out, name in zip(outputs, ("square", "negate", "halve"), strict=True):
        reference = FUNCTIONS[name][1]
        assert values(tracked[out]) == [reference(x + 1) for x in range(60)]


def test_fan_out_read_by_hand_in_turn(pool):
    source = Piper(inc, parallel=pool)
    outputs = [Piper(square, parallel=pool), Piper(negate, parallel=pool),
               Piper(halve, parallel=pool)]
    plumber = Plumber()
    plumber.add_pipes([(source, out) for out in outputs])
    plumber.start([range(20)])
    try:
        assert list(zip(*outputs, strict=False)) == [     # read in step
            ((x + 1) ** 2, -(x + 1), (x + 1) / 2) for x in range(20)]
    finally:
        plumber.stop()


def test_mixed_pools_and_linear_pipers():
    """Three local kinds of IMap and linear Pipers in one pipeline."""
    with IMap(worker_type="thread", worker_num=2, stride=2) as threads, \
            IMap(worker_type="process", worker_num=2, stride=4) as processes, \
            IMap(worker_type="inline", stride=3) as inline:
        a = Piper(inc, parallel=processes)
        b = Piper(square, parallel=inline)
        c = Piper(negate, parallel=threads)
        d = Piper(join_diff, parallel=processes, track=True)
        e = Piper(halve, track=True)
        plumber = Plumber()
        plumber.add_pipes([(a, b, d), (a, c, d), (c, e)])
        tracked = run(plumber, [range(40)])
    assert values(tracked[d]) == [(x + 1) ** 2 + (x + 1) for x in range(40)]
    assert values(tracked[e]) == [-(x + 1) / 2 for x in range(40)]


def test_errors_travel_in_place_through_a_diamond(pool):
    source = Piper(reciprocal, parallel=pool)
    left, right = Piper(square, parallel=pool), Piper(negate, parallel=pool)
    join = Piper(join_diff, parallel=pool, track=True)
    plumber = Plumber()
    plumber.add_pipes([(source, left, join), (source, right, join)])
    result = values(run(plumber, [[1, 0, 2]])[join])
    assert result[0] == 2 and result[2] == 0.25 + 0.5
    assert isinstance(result[1], PiperError)


#: examples per kind: a process, remote or Dask pool costs tens of milliseconds to start
EXAMPLES = {"linear": 10, "inline": 15, "thread": 15, "process": 5, "remote": 4, "dask": 4}
chains = st.fixed_dictionaries(dict(
    names=st.lists(st.sampled_from(sorted(FUNCTIONS)), min_size=1, max_size=5),
    data=st.lists(st.integers(-50, 50), max_size=30),
    stride=st.integers(1, 5), shared=st.booleans()))


def test_random_chains_equal_a_sequential_run(make_parallel):
    @settings(max_examples=EXAMPLES[make_parallel.kind], deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(chains)
    def equal(chain):
        check_chain(make_parallel, **chain)
    equal()


def check_chain(make_parallel, names, data, stride, shared):
    pools = []

    def new_pool():
        pools.append(make_parallel(stride=stride))
        return pools[-1]

    one = new_pool() if shared else None
    pipers = [Piper(Worker(FUNCTIONS[n][0]), parallel=(one or new_pool()) if k % 2 == 0
                    else False) for k, n in enumerate(names)]
    pipers[-1].track = True
    plumber = Plumber()
    plumber.add_pipe(tuple(pipers))
    try:
        tracked = run(plumber, [data])[pipers[-1]]
    finally:
        for imap in pools:
            if imap is not False:
                imap.stop()
    expected = []
    for x in data:
        for n in names:
            x = FUNCTIONS[n][1](x)
        expected.append(x)
    assert values(tracked) == expected
