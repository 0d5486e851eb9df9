"""Property: a cached rerun of a random sequence of functions over random inputs gives
what an uncached run gives (errors included), and evaluates only the failed items."""
from __future__ import annotations

import tempfile

import cache_functions as cf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papy import Cache, IMap, PiperError, Worker, WorkerError

stage = st.integers(0, len(cf.MENU) - 1).flatmap(
    lambda k: st.tuples(st.just(k), st.integers(0, len(cf.MENU[k][1]) - 1)))
pipelines = st.lists(stage, min_size=1, max_size=4)
inputs = st.lists(st.one_of(st.integers(-30, 30), st.text(max_size=3)), max_size=25)


def workers(pipeline, cache=None):
    return [Worker(cf.MENU[k][0], cf.MENU[k][1][a], cache=cache) for k, a in pipeline]


def normal(result):
    """What an item gave, comparable across runs (an error by its exception)."""
    if isinstance(result, (WorkerError, PiperError)):
        return ("error", repr(result))
    return ("value", type(result).__name__, result)


def run_stages(stages, items, evaluate):
    """The stages one after the other, as Pipers would chain them: a WorkerError becomes
    a PiperError for the next stage (which then passes it on without evaluating)."""
    values = [[item] for item in items]
    for worker in stages:
        results = evaluate(worker, values)
        values = [[PiperError(r) if isinstance(r, WorkerError) else r] for r in results]
    return [normal(v[0]) for v in values]


def in_this_thread(worker, inboxes):
    return [worker(inbox) for inbox in inboxes]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipeline=pipelines, items=inputs)
def test_cached_rerun_equals_uncached_run(pipeline, items):
    expected = run_stages(workers(pipeline), items, in_this_thread)
    with tempfile.TemporaryDirectory() as root:
        cache = Cache(root)
        cached = workers(pipeline, cache)
        assert run_stages(cached, items, in_this_thread) == expected
        first = cache.stats(reset=True)
        records = [w.cache_record.take() for w in cached]
        assert run_stages(cached, items, in_this_thread) == expected
        again = cache.stats()
        # only the items that failed run again; everything else comes from the cache
        failed_first = sum(r.failed for r in records if r is not None)
        evaluated = sum(r.executed + r.failed for r in (w.cache_record.take() for w in cached)
                        if r is not None)
        assert again["misses"] == again["errors"] == first["errors"] == evaluated \
            == failed_first


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipeline=pipelines, items=inputs)
def test_cached_rerun_on_a_thread_pool_equals_uncached_run(pipeline, items):
    expected = run_stages(workers(pipeline), items, in_this_thread)
    def on_a_pool(worker, inboxes):
        with IMap(worker, iter(inboxes), worker_type="thread", worker_num=2) as pool:
            return list(pool)
    with tempfile.TemporaryDirectory() as root:
        cached = workers(pipeline, Cache(root))
        assert run_stages(cached, items, on_a_pool) == expected
        assert run_stages(cached, items, on_a_pool) == expected
