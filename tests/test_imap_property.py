"""Property: for any pool shape, an IMap (or a chain of tasks) gives what map() gives, on
every kind of pool (fewer examples where a pool costs more to start)."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imap import IMap


def add3(x):
    return x + 3


def double(x):
    return 2 * x


STEPS = [add3, double]
#: examples per kind: a process, remote or Dask pool costs tens of milliseconds to start
EXAMPLES = {"inline": 60, "thread": 60, "process": 10, "remote": 8, "dask": 8}

shapes = st.fixed_dictionaries({
    "workers": st.integers(1, 3),
    "stride": st.one_of(st.integers(1, 9), st.sampled_from([17, 32])),
    "extra_buffer": st.integers(0, 12),
    "ordered": st.booleans(),
    "chain": st.lists(st.sampled_from([0, 1]), min_size=1, max_size=3),
    "data": st.lists(st.integers(-1000, 1000), max_size=60),
})


def expected(shape):
    values = shape["data"]
    for step in shape["chain"]:
        values = list(map(STEPS[step], values))
    return values


def run(shape, pool_options):
    stride = shape["stride"]
    # a chain of n tasks needs room for one stride of each (the documented rule)
    buffer = stride * len(shape["chain"]) + shape["extra_buffer"]
    pool = IMap(**pool_options.with_workers(shape["workers"]), stride=stride,
                buffer=buffer, ordered=shape["ordered"])
    results = iter(shape["data"])
    for step in shape["chain"]:
        results = pool.add_task(STEPS[step], results)
    with pool:
        pool.start()
        return list(results)


def check(shape, pool_options):
    got, want = run(shape, pool_options), expected(shape)
    if shape["ordered"]:
        assert got == want
    else:
        assert sorted(got) == sorted(want)


def test_any_pool_equals_map(pool_options):
    @settings(max_examples=EXAMPLES[pool_options.kind], deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(shapes)
    def equals_map(shape):
        check(shape, pool_options)
    equals_map()
