"""Property (issue 13): a cached rerun of a random pipeline gives what an uncached run
gives (error items included) and evaluates nothing but the items that failed."""
from __future__ import annotations

import tempfile

import cache_functions as cf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papy import Cache, IMap, Piper, PiperError, Plumber, Worker

stage = st.integers(0, len(cf.MENU) - 1).flatmap(
    lambda k: st.tuples(st.just(k), st.integers(0, len(cf.MENU[k][1]) - 1)))
pipelines = st.lists(stage, min_size=1, max_size=4)
inputs = st.lists(st.one_of(st.integers(-30, 30), st.text(max_size=3)), max_size=30)


def run(pipeline, items, cache=None, pool=None, fuse=True):
    """The outputs (an error item as "error") and plumber.stats['cache']."""
    pipers = [Piper(Worker(cf.MENU[k][0], cf.MENU[k][1][a]), parallel=pool or False,
                    cache=cache, name=f"{n}") for n, (k, a) in enumerate(pipeline)]
    plumber = Plumber()
    plumber.fuse = fuse
    plumber.add_pipe(tuple(pipers))
    plumber.start([items])
    outputs = ["error" if isinstance(o, PiperError) else (type(o).__name__, o)
               for o in pipers[-1]]
    plumber.stop()
    return outputs, plumber.stats["cache"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipeline=pipelines, items=inputs, fuse=st.booleans())
def test_a_cached_rerun_of_a_random_pipeline_equals_an_uncached_run(pipeline, items, fuse):
    expected, _ = run(pipeline, items)
    with tempfile.TemporaryDirectory() as root, \
            IMap(worker_type="thread", worker_num=2) as pool:
        cache = Cache(root)
        first, _ = run(pipeline, items, cache, pool, fuse)
        cache.stats(reset=True)
        again, record = run(pipeline, items, cache, pool, fuse)
        stats = cache.stats()
    assert first == expected and again == expected
    for counts in record.values():          # every item counted once per Piper
        assert counts["executed"] == 0 and sum(counts.values()) == len(items)
    # only the items that failed were evaluated again (failures are never stored)
    assert stats["misses"] == stats["errors"] == sum(c["failed"] for c in record.values())
