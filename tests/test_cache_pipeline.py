"""A cache on every Piper of a pipeline (issue 13 items 3 and 5): a rerun evaluates only
what changed, on every pool kind; the per-item record in plumber.stats['cache'], the
summary and papy run's report."""
from __future__ import annotations

import io
import os

import cache_functions as cf
import pytest

from papy import Cache, IMap, Piper, PiperError, Plumber, Worker
from papy.cli import run_plumber

ITEMS = list(range(12))


def run(cache, stages, items, pool_options=None, fuse=True):
    """Run the chain of ``stages`` (``(function, kwargs)``) over ``items``, every Piper
    cached, on one IMap (or linear); ``(outputs, plumber.stats['cache'])``."""
    pool = IMap(**pool_options) if pool_options is not None else None
    try:
        pipers = [Piper(Worker(func, (), kwargs), parallel=pool or False, cache=cache,
                        name=f"{k}-{func.__name__}") for k, (func, kwargs) in enumerate(stages)]
        plumber = Plumber()
        plumber.fuse = fuse
        plumber.add_pipe(tuple(pipers))
        plumber.start([items])
        outputs = list(pipers[-1])
        plumber.stop()
    finally:
        if pool is not None:
            pool.stop()
    return outputs, plumber.stats["cache"]


def chain(folder, stage2=cf.stage_shift, k=100):
    return [(cf.stage_inc, {"folder": folder}), (stage2, {"folder": folder, "k": k}),
            (cf.stage_text, {"folder": folder})]


def expected(items, k=100):
    return [f"<{x + 1 + k if (x + 1) % 2 else x + 1}>" for x in items]


@pytest.fixture
def marks(tmp_path):
    folder = tmp_path / "marks"
    folder.mkdir()
    return str(folder)


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path / "cache", ignore=("folder",))


def counts(executed=0, cached=0, failed=0, upstream_failed=0):
    return {"executed": executed, "cached": cached, "failed": failed,
            "upstream_failed": upstream_failed}


def test_a_second_run_evaluates_no_function(pool_options, cache, marks):
    first, record = run(cache, chain(marks), ITEMS, pool_options)
    assert first == expected(ITEMS)
    assert record == {name: counts(executed=12) for name in record} and len(record) == 3
    evaluations = len(os.listdir(marks))
    assert evaluations == 3 * len(ITEMS)
    second, record = run(cache, chain(marks), ITEMS, pool_options)
    assert second == first and len(os.listdir(marks)) == evaluations
    assert record == {name: counts(cached=12) for name in record}


def test_a_changed_item_recomputes_its_path_only(worker_type, cache, marks):
    run(cache, chain(marks), ITEMS, {"worker_type": worker_type, "worker_num": 2})
    items = ITEMS[:4] + [40] + ITEMS[5:]
    outputs, record = run(cache, chain(marks), items,
                          {"worker_type": worker_type, "worker_num": 2})
    assert outputs == expected(items)
    assert [cf.evaluated(marks, stage).count("40") for stage in ("inc",)] == [1]
    assert cf.evaluated(marks, "shift").count("41") == 1
    assert len(os.listdir(marks)) == 3 * len(ITEMS) + 3        # the new item's path only
    assert list(record.values()) == [counts(executed=1, cached=11)] * 3


@pytest.mark.parametrize("change", ["argument", "code"])
def test_a_changed_stage_recomputes_downstream_only_where_its_output_changed(
        worker_type, cache, marks, change):
    options = {"worker_type": worker_type, "worker_num": 2}
    run(cache, chain(marks), ITEMS, options)
    before = {stage: len(cf.evaluated(marks, stage)) for stage in ("inc", "shift", "text")}
    if change == "argument":        # the 6 odd inputs of stage 2 shifted by 200: new
        stages, want, changed = chain(marks, k=200), expected(ITEMS, k=200), 6
    else:                           # other code: odd inputs 1, 3, 5 no longer shifted
        stages, changed = chain(marks, stage2=cf.stage_shift_again), 3
        want = [f"<{y + 100 if y % 2 and y > 6 else y}>" for y in (x + 1 for x in ITEMS)]
    outputs, record = run(cache, stages, ITEMS, options)
    assert outputs == want
    names = list(record)
    assert record[names[0]] == counts(cached=12)                # upstream: untouched
    assert record[names[1]] == counts(executed=12)              # the changed stage
    # downstream: only the items whose input changed (an unchanged output stops there)
    assert record[names[2]] == counts(executed=changed, cached=12 - changed)
    after = {stage: len(cf.evaluated(marks, stage)) for stage in ("inc", "shift", "text")}
    assert {s: after[s] - before[s] for s in after} == {"inc": 0, "shift": 12,
                                                         "text": changed}


def test_failures_are_counted_per_piper_fused_or_not(worker_type, cache, marks):
    stages = [(cf.stage_fails_on_5, {"folder": marks}), (cf.stage_inc, {"folder": marks}),
              (cf.stage_text, {"folder": marks})]
    items = list(range(20))
    for fuse in (True, False):
        outputs, record = run(cache, stages, items,
                              {"worker_type": worker_type, "worker_num": 2}, fuse=fuse)
        assert [isinstance(o, PiperError) for o in outputs] == [x % 10 == 5 for x in items]
        first, second, third = record.values()
        if fuse:        # the first run: 18 computed and stored, 2 failures
            assert first == counts(executed=18, failed=2)
            assert second == third == counts(executed=18, upstream_failed=2)
        else:           # failures are never stored: they run again, the rest is cached
            assert first == counts(cached=18, failed=2)
            assert second == third == counts(cached=18, upstream_failed=2)


def test_linear_pipers_are_cached_too(cache, marks):
    assert run(cache, chain(marks), ITEMS)[0] == expected(ITEMS)
    outputs, record = run(cache, chain(marks), ITEMS)
    assert outputs == expected(ITEMS)
    assert list(record.values()) == [counts(cached=12)] * 3


def test_the_summary_and_papy_runs_report_show_the_record(cache, marks):
    stages = chain(marks)
    plumber = Plumber()
    pipers = [Piper(Worker(f, (), kw), cache=cache, name=f"stage{k}")
              for k, (f, kw) in enumerate(stages)]
    plumber.add_pipe(tuple(pipers))
    stream = io.StringIO()
    assert run_plumber(plumber, [ITEMS], progress="off", stream=stream) == 0
    report = stream.getvalue()
    assert "executed" in report and "upstream failed" in report
    assert "cache: 36 executed, 0 from the cache, 0 failed" in report
    assert plumber.stats["cache"]["stage1"] == counts(executed=12)


def test_pipers_without_a_cache_are_not_in_the_record(cache, marks):
    plumber = Plumber()
    plain = Piper(Worker(cf.stage_inc, (), {"folder": marks}), name="plain")
    cached = Piper(Worker(cf.stage_text, (), {"folder": marks}), cache=cache, name="cached")
    plumber.add_pipe((plain, cached))
    plumber.start([ITEMS])
    assert len(list(cached)) == len(ITEMS)
    plumber.stop()
    assert plumber.stats["cache"] == {"cached": counts(executed=12)}


def test_remote_workers_and_local_ones_share_the_cache_directory(forking_server, tmp_path,
                                                                 marks):
    """A shared directory (here the same host's): what workers on an RPyC server stored, a
    process pool's workers read, and the other way round, each through its own Cache."""
    remote = {"worker_num": 0, "worker_remote": [(forking_server.address, 2)]}
    local = {"worker_type": "process", "worker_num": 2}
    folder = tmp_path / "shared"
    outputs, record = run(Cache(folder, ignore=("folder",)), chain(marks), ITEMS, remote)
    assert outputs == expected(ITEMS)
    assert record == {name: counts(executed=12) for name in record} and len(record) == 3
    outputs, record = run(Cache(folder, ignore=("folder",)), chain(marks), ITEMS, local)
    assert outputs == expected(ITEMS)
    assert record == {name: counts(cached=12) for name in record}
    more = [x + 100 for x in ITEMS]
    run(Cache(folder, ignore=("folder",)), chain(marks), more, local)
    outputs, record = run(Cache(folder, ignore=("folder",)), chain(marks), ITEMS + more,
                          remote)
    assert outputs == expected(ITEMS + more)
    assert record == {name: counts(cached=24) for name in record}
    assert len(os.listdir(marks)) == 3 * 24         # each item evaluated once per stage


def test_a_process_worker_has_the_cache_module_before_its_first_item():
    """papy has the fork server import the cache's side of a Worker with papy: a worker
    that receives a cached Worker does not import it before its first result."""
    pool = IMap(worker_type="process", worker_num=1)
    results = pool.add_task(cf.imported, [["papy._cache_worker"], ["papy"]])
    with pool:
        pool.start()
        assert list(results) == [True, True]
