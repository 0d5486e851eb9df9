"""IMap(worker_type='dask'): batches as Dask futures (imap.backends.dask).

Most tests share the session's in-process LocalCluster (``dask_client`` in conftest.py:
2 workers x 1 thread); the shared IMap suites also run on it through ``pool_options``. The
tests that kill workers or need a scheduler of their own make a cluster and close it.
"""
from __future__ import annotations

import os
import sys
import textwrap
import threading
import time

import pytest

from imap import IMap, RemoteTraceback, SerializationError, WorkerDiedError
from papy import Piper, Plumber, Worker, cli

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

DEADLINE = 30.0


def add1(x):
    return x + 1


def invert(x):
    return 1 / x


def nap(seconds):
    time.sleep(seconds)
    return seconds


def pid_of_worker(_):
    return os.getpid()


def on_dask(client, **settings):
    return IMap(worker_type="dask", worker_remote=client, **settings)


def assert_no_default_client():
    with pytest.raises(ValueError):
        distributed.default_client()


# -- settings --------------------------------------------------------------------------

def test_worker_num_defaults_to_the_clusters_threads(dask_client):
    assert on_dask(dask_client).worker_num == 2
    assert on_dask(dask_client).stride == 32768 * 2            # a Dask task costs ms
    assert on_dask(dask_client, worker_num=5).worker_num == 5
    assert on_dask(dask_client.scheduler.address).worker_num == 2      # asked the scheduler
    assert on_dask(None, worker_num=3).worker_num == 3                 # nothing started yet


@pytest.mark.parametrize("remote, error", [(42, TypeError), ("", TypeError),
                                           ([("host", 2)], TypeError)])
def test_bad_worker_remote_is_refused(remote, error):
    with pytest.raises(error, match="worker_remote for worker_type='dask'"):
        on_dask(remote)


def test_bad_worker_num_is_refused(dask_client):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="worker_num"):
            on_dask(dask_client, worker_num=bad)


def test_without_distributed_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "imap.backends.dask")
    with pytest.raises(ImportError, match=r"pip install 'papy\[dask\]'"):
        IMap(worker_type="dask")


# -- batches ------------------------------------------------------------------------------

def test_one_future_per_batch_with_a_unique_key_never_pure(dask_client, monkeypatch):
    calls = []
    submit = dask_client.submit

    def spy(func, *args, **kwargs):
        calls.append((func.__name__, kwargs.get("key"), kwargs.get("pure")))
        return submit(func, *args, **kwargs)

    monkeypatch.setattr(dask_client, "submit", spy)
    items = 2000
    with on_dask(dask_client, stride=400) as pool:   # batches of at most 400 / 2 items
        results = pool.add_task(add1, range(items))
        pool.start()
        assert list(results) == [x + 1 for x in range(items)]
    batches = [c for c in calls if c[0] == "run_batch"]
    assert items / 200 <= len(batches) <= items / 20   # batches grow 1, 4, 16, ... to 200
    assert all(pure is False for _, _, pure in batches)
    assert len({key for _, key, _ in batches}) == len(batches)


def test_tasks_weave_ordered_and_unordered(dask_client):
    for ordered in (True, False):
        with on_dask(dask_client, stride=5, ordered=ordered) as pool:
            first = pool.add_task(add1, range(40))
            second = pool.add_task(invert, range(1, 41))
            pool.start()
            # read in step (docs/imap.md, rules); not strict: the end of `second` is not read
            pairs = list(zip(first, second, strict=False))
        got_first, got_second = [p[0] for p in pairs], [p[1] for p in pairs]
        if not ordered:
            got_first, got_second = sorted(got_first), sorted(got_second, reverse=True)
        assert got_first == [x + 1 for x in range(40)]
        assert got_second == [1 / x for x in range(1, 41)]


def test_errors_in_place_carry_the_dask_worker_traceback(dask_client):
    with on_dask(dask_client, worker_num=1) as pool:
        results = pool.add_task(invert, [1, 0, 2])
        pool.start()
        assert pool.next() == 1.0
        with pytest.raises(ZeroDivisionError) as info:
            pool.next()
        assert pool.next() == 0.5
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    text = str(cause)
    assert "on the Dask worker" in text and "invert" in text and "ZeroDivisionError" in text
    del results


def test_next_timeout_then_the_result(dask_client):
    with on_dask(dask_client) as pool:
        pool.add_task(nap, [0.5])
        pool.start()
        with pytest.raises(TimeoutError):
            pool.next(timeout=0.05)
        assert pool.next(timeout=DEADLINE) == 0.5


def test_lambdas_closures_chains_and_joins(dask_client):
    offset = 10
    scale = lambda x: x * 3  # noqa: E731 - a lambda is tested

    def shifted(x):
        return x + offset

    with on_dask(dask_client, stride=7) as pool:
        a = pool.add_task(shifted, range(30))
        b = pool.add_task(scale, a)                               # chain
        c = pool.add_task(lambda pair: pair[0] - pair[1], zip(b, range(30), strict=True))   # join
        pool.start()
        assert list(c) == [(x + offset) * 3 - x for x in range(30)]


def test_items_and_results_that_cannot_be_pickled_fail_alone(dask_client):
    lock = threading.Lock()
    with on_dask(dask_client) as pool:
        pool.add_task(add1, [0, lock, 2])
        pool.start()
        assert pool.next() == 1
        with pytest.raises(SerializationError, match="item 1 of task 0 cannot be pickled"):
            pool.next()
        assert pool.next() == 3
    with on_dask(dask_client) as pool:
        pool.add_task(lambda x: threading.Lock() if x == 1 else x, [0, 1, 2])
        pool.start()
        assert pool.next() == 0
        with pytest.raises(SerializationError, match="cannot be pickled"):
            pool.next()
        assert pool.next() == 2


class FailsToUnpickle:
    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise ValueError("cannot rebuild on this side")


def test_an_item_that_cannot_be_unpickled_on_the_worker_fails_alone(dask_client):
    with on_dask(dask_client, worker_num=1) as pool:
        pool.add_task(add1, [0, FailsToUnpickle(), 2])
        pool.start()
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(pool.next(timeout=DEADLINE))
            except SerializationError as exc:
                outcomes.append(exc)
    assert outcomes[0] == 1 and outcomes[2] == 3
    assert "item 1 of task 0 cannot be unpickled on the Dask worker" in str(outcomes[1])


class Unpicklable:
    def __reduce__(self):
        raise TypeError("no pickling for me")


def test_a_function_that_cannot_be_pickled_is_refused_at_add_task(dask_client):
    captured = Unpicklable()
    pool = on_dask(dask_client)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pool.add_task(lambda x: (captured, x), [1])


def test_item_timeout_abandons_the_item_and_goes_on(dask_client):
    with on_dask(dask_client, worker_num=1) as pool:
        pool.add_task(nap, [0.01, 1.0, 0.01, 0.02], item_timeout=0.3)
        pool.start()
        assert pool.next(timeout=DEADLINE) == 0.01
        with pytest.raises(TimeoutError, match="abandoned") as info:
            pool.next(timeout=DEADLINE)
        assert "item_timeout of 0.3 s on the Dask worker" in str(info.value)
        assert pool.next(timeout=DEADLINE) == 0.01
        assert pool.next(timeout=DEADLINE) == 0.02


# -- who owns what ----------------------------------------------------------------------

def test_a_given_client_stays_open_and_never_becomes_the_default(dask_client):
    for _ in range(2):                               # stop() then start() again
        with on_dask(dask_client) as pool:
            pool.add_task(add1, range(5))
            pool.start()
            assert list(pool) == [1, 2, 3, 4, 5]
            assert_no_default_client()
    assert dask_client.status == "running"
    assert dask_client.submit(add1, 1, pure=False).result() == 2


def test_an_address_gets_a_client_of_its_own_closed_at_stop(dask_client):
    before = set(threading.enumerate())
    with on_dask(dask_client.scheduler.address) as pool:
        pool.add_task(add1, range(5))
        pool.start()
        assert list(pool) == [1, 2, 3, 4, 5]
        assert_no_default_client()
        assert set(threading.enumerate()) - before           # its client's IO loop
    # the leak guard checks that its threads are gone; the shared cluster still serves
    assert dask_client.submit(add1, 1, pure=False).result() == 2


def test_no_worker_remote_makes_a_local_cluster_of_processes_closed_at_stop():
    with IMap(worker_type="dask", worker_num=2) as pool:
        pool.add_task(pid_of_worker, range(20))
        pool.start()
        assert_no_default_client()
        pids = set(pool)
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    # the leak guard checks that the worker processes and the cluster's threads are gone


# -- faults -------------------------------------------------------------------------------

def die_once(x, marker):
    if x == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return x


def die_always(x):
    if x == 3:
        os._exit(1)
    return x


def test_dying_workers_rerun_by_dask_then_killed_worker_fails_the_batch_in_place(tmp_path):
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     host="127.0.0.1",
                                     dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        with on_dask(client, stride=8) as pool:
            once = pool.add_task(die_once, range(12), args=(str(tmp_path / "died"),))
            pool.start()
            assert list(once) == list(range(12))       # Dask reran the batch elsewhere
        assert (tmp_path / "died").exists()
        with on_dask(client, stride=8) as pool:
            pool.add_task(die_always, range(12))
            pool.start()
            outcomes = []
            for _ in range(12):
                try:
                    outcomes.append(pool.next(timeout=DEADLINE))
                except WorkerDiedError as exc:
                    outcomes.append(exc)
    died = [k for k, value in enumerate(outcomes) if isinstance(value, WorkerDiedError)]
    assert 3 in died
    assert "KilledWorker" in str(outcomes[3]) and outcomes[3].index == 3
    assert all(outcomes[k] == k for k in range(12) if k not in died)
    assert len(died) < 12                              # only the batch with item 3 failed


@pytest.mark.parametrize("given", ["address", "client"])
def test_a_lost_scheduler_is_a_clear_error_at_the_next_call_and_stop_returns(given):
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                       dashboard_address="127.0.0.1:0")
    client = None
    try:
        if given == "client":   # by address: a Client of the cluster object would keep its
            # IO loop running when the cluster closes first (Dask's behaviour, not ours)
            client = distributed.Client(cluster.scheduler_address, set_as_default=False)
        pool = on_dask(client or cluster.scheduler_address)
        results = pool.add_task(nap, [0.05] * 4 + [0.3] * 20)
        pool.start()
        assert next(results) == 0.05
        cluster.close()
        with pytest.raises(WorkerDiedError, match="connection to the Dask scheduler"):
            while True:
                pool.next(timeout=DEADLINE)
        with pytest.raises(WorkerDiedError, match="scheduler"):   # and every later item
            pool.next(timeout=DEADLINE)
        started = time.monotonic()
        pool.stop()
        assert time.monotonic() - started < DEADLINE
    finally:
        if client is not None:
            client.close()
        cluster.close()


def test_an_unreachable_scheduler_is_a_worker_start_error(monkeypatch):
    from imap import WorkerStartError
    from imap.backends import _dask_session
    monkeypatch.setattr(_dask_session, "CONNECT_TIMEOUT", 0.5)
    nowhere = "tcp://127.0.0.1:9"
    with pytest.raises(WorkerStartError, match="cannot reach the Dask scheduler at tcp://"):
        on_dask(nowhere)                                  # asked for its threads
    pool = on_dask(nowhere, worker_num=1)
    pool.add_task(add1, [1])
    with pytest.raises(WorkerStartError, match="connect to the Dask scheduler at tcp://"):
        pool.start()
    assert not pool.started


def test_a_function_that_cannot_be_loaded_on_the_workers_fails_every_item(dask_client):
    from imap import imports
    with pytest.warns(ImportWarning):
        @imports(["no_such_module_here"], forgive=True)
        def needs_a_module(x):
            return x

    with on_dask(dask_client) as pool:
        pool.add_task(needs_a_module, [1, 2])
        pool.start()
        for _ in range(2):
            with pytest.raises(ImportError, match="cannot import no_such_module_here") as info:
                pool.next(timeout=DEADLINE)
            assert "on the Dask worker" in str(info.value.__cause__)


# -- papy ----------------------------------------------------------------------------------

def inc(inbox):
    return inbox[0] + 1


def square(inbox):
    return inbox[0] * inbox[0]


def join_diff(inbox):
    return inbox[0] - inbox[1]


def test_pipers_on_dask_next_to_pipers_on_local_pools(dask_client):
    with on_dask(dask_client, stride=4) as cluster_pool, \
            IMap(worker_type="thread", worker_num=2, stride=2) as threads:
        a = Piper(inc, parallel=cluster_pool)
        b = Piper(square, parallel=threads)
        c = Piper(Worker(lambda inbox: -inbox[0]), parallel=cluster_pool)
        d = Piper(join_diff, track=True)
        plumber = Plumber()
        plumber.add_pipes([(a, b, d), (a, c, d)])
        plumber.start([range(30)])
        plumber.run()
        plumber.wait()
        plumber.pause()
        plumber.stop()
        tracked = plumber.stats["pipers_tracked"][d]
    assert [tracked[i] for i in range(30)] == [(x + 1) ** 2 + (x + 1) for x in range(30)]


CLI_PIPELINE = """
    from papy import IMap, Piper, Plumber, Worker

    def double(inbox):
        return inbox[0] * 2

    def keep(inbox, out):
        out.append(inbox[0])
        return inbox[0]

    RESULTS = []
    IMAPS = []

    def pipeline():
        imap = IMap(worker_type="process", worker_num=2)
        IMAPS.append(imap)
        plumber = Plumber()
        plumber.add_pipe((Piper(double, parallel=imap),
                          Piper(Worker(keep, (RESULTS,)), name="keep")))
        return plumber

    def inputs():
        return [range(6)]
"""


def test_papy_run_dask_puts_the_modules_imaps_on_the_cluster(dask_client, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = tmp_path / "p.py"
    path.write_text(textwrap.dedent(CLI_PIPELINE), encoding="utf-8")
    made = []
    load = cli.load_module
    monkeypatch.setattr(cli, "load_module", lambda p: made.append(load(p)) or made[-1])
    address = dask_client.scheduler.address
    assert cli.main(["run", "--dask", address, str(path), "--quiet"]) == 0
    module = made[0]
    assert sorted(module.RESULTS) == [0, 2, 4, 6, 8, 10]
    assert [(m.worker_type, m.worker_remote) for m in module.IMAPS] == [("dask", address)]
    assert IMap(worker_type="thread").worker_type == "thread"       # only during the run


def test_a_local_cluster_of_its_own_keeps_its_files_in_a_folder_removed_at_stop(
        tmp_path, monkeypatch):
    """Dask's workers would leave <temporary folder>/dask-scratch-space behind: the IMap's
    own LocalCluster uses a folder of its own, removed at stop (unless Dask's
    temporary-directory is configured: conftest.py configures one, so it is unset here)."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with dask.config.set({"temporary-directory": None}):
        pool = on_dask(None, worker_num=1)
        pool.add_task(pid_of_worker, range(3))
        pool.start()
        try:
            workers = set(pool)
            during = sorted(entry.name for entry in tmp_path.iterdir())
        finally:
            pool.stop()
    assert len(workers) == 1 and os.getpid() not in workers        # a process of its own
    assert len(during) == 1 and during[0].startswith("imap-dask-"), during
    assert list(tmp_path.iterdir()) == []
