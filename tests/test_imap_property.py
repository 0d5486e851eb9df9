"""Property: for any pool shape, an IMap (or a chain of tasks) gives what map() gives."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imap import IMap


def add3(x):
    return x + 3


def double(x):
    return 2 * x


STEPS = [add3, double]

shapes = st.fixed_dictionaries({
    "workers": st.integers(1, 3),
    "stride": st.integers(1, 9),
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


def run(shape, worker_type):
    stride = shape["stride"]
    # a chain of n tasks needs room for one stride of each (the documented rule)
    buffer = stride * len(shape["chain"]) + shape["extra_buffer"]
    pool = IMap(worker_type=worker_type, worker_num=shape["workers"], stride=stride,
                buffer=buffer, ordered=shape["ordered"])
    results = iter(shape["data"])
    for step in shape["chain"]:
        results = pool.add_task(STEPS[step], results)
    with pool:
        pool.start()
        return list(results)


def check(shape, worker_type):
    got, want = run(shape, worker_type), expected(shape)
    if shape["ordered"]:
        assert got == want
    else:
        assert sorted(got) == sorted(want)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes)
def test_thread_pool_equals_map(shape):
    check(shape, "thread")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes)
def test_process_pool_equals_map(shape):
    check(shape, "process")
