"""Worker(..., cache=) and Piper(..., cache=) on IMaps of each kind; the per-item record;
the decorator on thread and process pools."""
from __future__ import annotations

import logging
import pickle
import threading

import cache_functions as cf
import pytest

from papy import Cache, IMap, Piper, PiperError, Worker, WorkerError
from papy._cache_record import RecordDelta
from papy._fuse import FusedCall
from papy._timed import BoxingCall, TimedCall
from papy._worker import map_stage


def run(worker, items, **pool_options):
    with IMap(**pool_options) as pool:
        task = pool.add_task(worker, ([item] for item in items))
        pool.start()
        return list(task)


def test_a_rerun_evaluates_nothing_and_gives_the_same_results(pool_options, tmp_path):
    cache, marks = Cache(tmp_path / "cache"), tmp_path / "marks"
    marks.mkdir()
    worker = Worker(cf.marks, (str(marks),), cache=cache)
    first = run(worker, range(20), **pool_options)
    assert first == [i * 10 for i in range(20)] and cf.evaluations(marks) == 20
    assert cache.stats()["misses"] == 20 and cache.stats()["hits"] == 0
    second = run(worker, range(20), **pool_options)
    assert second == first and cf.evaluations(marks) == 20        # no function ran
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (20, 20) and stats["bytes"] > 0


def test_one_changed_item_recomputes_that_item_only(worker_type, tmp_path):
    cache, marks = Cache(tmp_path / "cache"), tmp_path / "marks"
    marks.mkdir()
    worker = Worker(cf.marks, (str(marks),), cache=cache)
    run(worker, range(10), worker_type=worker_type, worker_num=2)
    items = list(range(10))
    items[4] = 40
    assert run(worker, items, worker_type=worker_type, worker_num=2) == [i * 10 for i in items]
    assert cf.evaluations(marks) == 11
    assert cache.stats(reset=True)["hits"] == 9


def test_a_changed_argument_recomputes(tmp_path):
    cache = Cache(tmp_path)
    assert [Worker(cf.inc, (1,), cache=cache)([i]) for i in range(3)] == [1, 2, 3]
    assert [Worker(cf.inc, (2,), cache=cache)([i]) for i in range(3)] == [2, 3, 4]
    assert [Worker(cf.inc, (), {"n": 2}, cache=cache)([i]) for i in range(3)] == [2, 3, 4]
    stats = cache.stats()
    assert (stats["misses"], stats["hits"]) == (6, 3)   # n=2 by keyword: the same key


def test_errors_are_never_cached(worker_type, tmp_path):
    cache = Cache(tmp_path)
    worker = Worker(cf.fails_on_odd, cache=cache)
    for _ in range(2):
        results = run(worker, range(6), worker_type=worker_type, worker_num=2)
        assert [r for r in results if not isinstance(r, WorkerError)] == [0, 2, 4]
        assert all(isinstance(results[i], WorkerError) for i in (1, 3, 5))
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["errors"]) == (3, 9, 6)


def test_record_travels_with_results_from_each_pool(pool_options, tmp_path):
    cache = Cache(tmp_path)
    recorded = cf.Recorded(Worker(cf.fails_on_odd, cache=cache))
    totals = []
    for _ in range(2):
        deltas = [delta for _, delta in run(recorded, range(10), **pool_options)]
        assert all(isinstance(d, RecordDelta) for d in deltas)   # one outcome per item
        totals.append(sum(deltas, RecordDelta()).as_dict())
    assert totals[0] == {"executed": 5, "cached": 0, "failed": 5, "upstream_failed": 0}
    assert totals[1] == {"executed": 0, "cached": 5, "failed": 5, "upstream_failed": 0}


def test_upstream_errors_are_passed_on_and_counted(tmp_path):
    cache = Cache(tmp_path)
    worker = Worker(cf.inc, cache=cache)
    upstream = PiperError(ValueError("before"))
    result = worker([upstream])
    assert isinstance(result, PiperError) and result.args == (upstream,)
    assert worker.cache_record.take().as_dict() == {"executed": 0, "cached": 0, "failed": 0,
                                                    "upstream_failed": 1}
    assert worker.cache_record.take() is None
    assert cache.stats()["misses"] == 0        # not looked up


def test_record_counts_exactly_from_many_threads(tmp_path):
    cache = Cache(tmp_path)
    worker = Worker(cf.square, cache=cache)
    taken: list = []

    def hammer(start):
        for i in range(start, start + 50):
            worker([i % 30])
            delta = worker.cache_record.take()
            if delta is not None:
                taken.append(delta)
    threads = [threading.Thread(target=hammer, args=(k * 50,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(taken, RecordDelta())
    assert total.executed + total.cached == 200 and total.failed == 0
    stats = cache.stats()
    assert stats["hits"] + stats["misses"] == 200


def test_unpicklable_result_goes_on_uncached_with_one_warning(tmp_path, caplog):
    cache = Cache(tmp_path)
    worker = Worker(cf.unpicklable, cache=cache)
    with caplog.at_level(logging.WARNING, logger="papy"):
        results = run(worker, range(8), worker_type="thread", worker_num=2)
    assert [r() for r in results] == list(range(8))
    warnings = [r for r in caplog.records if "cannot be pickled" in r.getMessage()]
    assert len(warnings) == 1 and "unpicklable" in warnings[0].getMessage()
    stats = cache.stats()
    assert (stats["uncacheable"], stats["hits"], stats["misses"]) == (8, 0, 8)
    delta = worker.cache_record.take()
    assert delta.executed == 8 and len(delta.warnings) == 1


def test_unpicklable_result_on_processes_warns_once_in_all(tmp_path):
    cache = Cache(tmp_path)
    recorded = cf.Recorded(Worker(cf.unpicklable, cache=cache), as_text=True)
    results = run(recorded, range(12), worker_type="process", worker_num=2)
    warnings = [w for _, delta in results for w in delta.warnings]
    assert len(warnings) == 1 and cache.stats()["uncacheable"] == 12


def test_ignore_leaves_an_argument_out_however_it_is_passed(tmp_path):
    cache = Cache(tmp_path, ignore=("verbose",))
    assert Worker(cf.with_verbose, (3,), {"verbose": True}, cache=cache)([2]) == 6
    assert Worker(cf.with_verbose, (3, False), cache=cache)([2]) == 6
    assert Worker(cf.with_verbose, (3,), cache=cache)([2]) == 6
    assert Worker(cf.with_verbose, (4,), cache=cache)([2]) == 8
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (2, 2)


def test_key_maps_the_inbox(tmp_path):
    cache = Cache(tmp_path)(key=lambda inbox: inbox[0]["id"])
    worker = Worker(cf.describe_record, cache=cache)
    assert worker([{"id": 1, "payload": "first"}]) == "1:first"
    assert worker([{"id": 1, "payload": "second"}]) == "1:first"     # same id: a hit
    assert worker([{"id": 2, "payload": "second"}]) == "2:second"


def test_a_failing_key_function_is_that_items_error(tmp_path):
    cache = Cache(tmp_path, key=lambda inbox: inbox[0]["id"])
    worker = Worker(cf.square, cache=cache)
    error = worker([3])
    assert isinstance(error, WorkerError) and isinstance(error.exception, TypeError)
    assert worker.cache_record.take().failed == 1


def test_an_item_without_a_key_runs_uncached(tmp_path, caplog):
    cache = Cache(tmp_path)
    worker = Worker(cf.first_of, cache=cache)
    lock = threading.Lock()
    with caplog.at_level(logging.WARNING, logger="papy"):
        assert worker([(lock, 1)]) == 1 and worker([(lock, 2)]) == 1
    assert len([r for r in caplog.records if "has no key" in r.getMessage()]) == 1
    assert cache.stats()["uncacheable"] == 2


def test_unkeyable_worker_arguments_are_a_type_error_at_once(tmp_path):
    with pytest.raises(TypeError, match="ignore"):
        Worker(cf.with_verbose, (threading.Lock(),), cache=Cache(tmp_path))
    worker = Worker(cf.with_verbose, (2,), {"verbose": threading.Lock()},
                    cache=Cache(tmp_path, ignore=("verbose",)))
    assert worker([4]) == 8


def test_cache_must_be_a_cache(tmp_path):
    with pytest.raises(TypeError, match="papy.Cache"):
        Worker(cf.inc, cache=str(tmp_path))


def test_code_false_keeps_results_of_a_changed_body(tmp_path):
    with_code, names_only = Cache(tmp_path / "a"), Cache(tmp_path / "b", code=False)
    for cache, expected in ((with_code, [1, 2]), (names_only, [2, 3])):
        assert [Worker(cf.body(1), cache=cache)([i]) for i in (1, 2)] == [2, 3]
        assert [Worker(cf.body(0), cache=cache)([i]) for i in (1, 2)] == expected


def test_copies_and_pipers(tmp_path):
    cache = Cache(tmp_path)
    plain = Worker(cf.inc, (1,))
    piper = Piper(plain, cache=cache)
    assert piper.worker is not plain and piper.worker.cache is cache and plain.cache is None
    assert piper.worker == plain and piper.worker.name == plain.name
    assert Worker(piper.worker).cache is cache                 # a copy keeps the cache
    assert Worker([piper.worker, cf.square]).cache is None    # a composition does not
    assert Piper(cf.inc).worker.cache is None


def test_fast_paths_do_not_bypass_a_cached_worker(tmp_path):
    cache = Cache(tmp_path)
    worker = Worker(cf.square, cache=cache)
    assert worker._bare is None and Worker(cf.square)._bare is not None
    values = list(range(5))
    for _ in range(2):
        assert map_stage(worker, worker._bare, values, True)[0] == [v * v for v in values]
        for call in (BoxingCall(worker), FusedCall([Worker(cf.inc), worker], True)):
            batch = getattr(call, "call_batch", None) or call.__imap_batch__
            assert [getattr(r, "value", r) for r in batch(values)[0]] == \
                [v * v if isinstance(call, BoxingCall) else (v + 1) ** 2 for v in values]
        timed = TimedCall(worker)([3])
        assert getattr(timed, "value", timed) == 9
    stats = cache.stats()
    # first round: 5 misses (map_stage), 5 hits (boxing), 1..4 hits and 5 a miss (fused:
    # inc first), 1 hit (timed); second round: hits only
    assert (stats["misses"], stats["hits"]) == (6, 5 + 4 + 1 + 5 + 5 + 5 + 1)


def test_a_pickled_cached_worker_keeps_its_key(tmp_path):
    cache = Cache(tmp_path)
    worker = Worker(cf.inc, (5,), cache=cache)
    assert worker([1]) == 6
    copy = pickle.loads(pickle.dumps(worker))
    assert copy([1]) == 6 and copy.cache_record.take().cached == 1
    assert cache.stats()["hits"] == 1


def test_decorated_function_on_pools(worker_type, tmp_path):
    cache = Cache(tmp_path)
    doubled = cache(cf.plain_double)
    for _ in range(2):
        with IMap(doubled, range(15), worker_type=worker_type, worker_num=2) as pool:
            assert list(pool) == [2 * i for i in range(15)]
    stats = cache.stats()
    assert (stats["misses"], stats["hits"]) == (15, 15)


def test_module_level_decorated_function_is_sent_by_reference(worker_type):
    func = cf.decorated_length
    copy = pickle.loads(pickle.dumps(func))
    assert copy.cache.root == func.cache.root and copy._func is func._func
    words = [f"word{'x' * i}" for i in range(12)]
    before = func.cache.stats(reset=True)
    del before
    for _ in range(2):
        with IMap(func, words, worker_type=worker_type, worker_num=2) as pool:
            assert list(pool) == [len(w) for w in words]
    stats = func.cache.stats()
    assert stats["hits"] + stats["misses"] == 24 and stats["hits"] >= 12


def test_decorator_options_and_methods(tmp_path):
    cache = Cache(tmp_path)

    @cache(ignore="verbose")
    def scaled(x, factor=2, verbose=False):
        return x * factor

    assert scaled(3) == 6 and scaled(3, verbose=True) == 6 and scaled(3, 2, True) == 6
    assert scaled(x=3, factor=2) == 6 and scaled(3, factor=3) == 9
    assert (cache.stats()["hits"], cache.stats()["misses"]) == (3, 2)

    class Box:
        def __init__(self, n):
            self.n = n

        @cache
        def plus(self, x):
            return self.n + x
    assert Box(1).plus(1) == 2 and Box(2).plus(1) == 3 and Box(1).plus(1) == 2


def test_decorated_exceptions_are_raised_and_not_stored(tmp_path):
    cache = Cache(tmp_path)
    calls = []

    @cache
    def fragile(x):
        calls.append(x)
        raise KeyError(x)
    for _ in range(2):
        with pytest.raises(KeyError):
            fragile(1)
    assert calls == [1, 1] and cache.stats()["errors"] == 2


def test_a_decorated_function_is_a_worker_function(tmp_path):
    cache = Cache(tmp_path)
    cached_inc = cache(cf.inc)
    worker = Worker(cached_inc, (2,))
    assert worker([1]) == 3 and worker([1]) == 3 and worker.__name__ == "inc"
    assert (cache.stats()["hits"], cache.stats()["misses"]) == (1, 1)
    with pytest.raises(TypeError, match="cannot be called"):
        Worker(cached_inc, (1, 2, 3))


@pytest.mark.parametrize("items", [
    [1, -2, 10 ** 60, -10 ** 60, 10 ** 200, 2.5, True, None],
    [None, 1 + 2j, 3], ["x" * 200, "y", b"z" * 100, float("nan")], [float("inf"), 10 ** 59],
    [(1 << 63) - 1, -(1 << 63), 0], [1 << 63, 7], [7, -(1 << 63) - 1]])   # ints: int64 or not
def test_the_keys_of_a_batch_are_those_of_its_items_one_by_one(tmp_path, items):
    """A batch keys plain items in C (reprs, long ones digested); one item at a time, by
    papy._keys.inbox_key: the same keys, so each finds what the other stored."""
    from papy._cache_batch import plain_keys
    from papy._keys import inbox_key
    worker = Worker(cf.first, cache=Cache(tmp_path))
    assert plain_keys(items, True, worker.cache.key)[0] == [inbox_key([x]) for x in items]
    # the types given by a caller that has them (a fused stage) make the same keys
    assert plain_keys(items, True, worker.cache.key, frozenset(map(type, items)))[0] == \
        plain_keys(items, True, worker.cache.key)[0]
    values, _ = map_stage(worker, None, items, True)
    assert [worker([x]) for x in items] == values or items[-1] != items[-1]   # nan
    assert worker.cache_record.take().cached == len(items)
