"""IMap construction, validation, tasks and the life cycle (after the original test_numap).

Tests that run a pool run on every kind (``pool_options``, tests/conftest.py); those that
only construct IMaps or add tasks before start() use whichever kind reads best.
"""
import os

import pytest

import imap
from imap import IMap, imports


def add1(x):
    return x + 1


def sub1(x):
    return x - 1


def test_public_names():
    assert set(imap.__all__) == {"IMap", "TaskIterator", "imports", "waiting_for_input",
                                 "IMapError", "WorkerDiedError", "SerializationError",
                                 "WorkerStartError", "RemoteError", "RemoteTraceback",
                                 "BrokenPoolError", "IMapWarning", "BatchSource",
                                 "BatchFunction", "Results", "Wake", "IterableSource",
                                 "TaskQueue", "QueueClosedError", "execute", "ExecuteIterator",
                                 "Executor", "PushSource"}
    for name in imap.__all__:
        assert getattr(imap, name) is not None


def test_defaults():
    pool = IMap()
    assert pool.worker_type == "process"
    assert pool.worker_num == os.cpu_count()
    assert pool.worker_remote == []
    assert pool.ordered is True and pool.skip is False
    assert pool.buffer is None
    assert pool.name.startswith("imap_")
    assert pool.stride >= pool.worker_num
    assert not pool.started


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(worker_type="fiber"), ValueError, "'process', 'thread', 'inline' or 'dask'"),
    (dict(worker_type="inline", worker_remote=[("h", 1)]), ValueError, "no worker_remote"),
    (dict(worker_num=-1), ValueError, "worker_num must be >= 0"),
    (dict(worker_num=1.5), TypeError, "worker_num must be an int"),
    (dict(worker_num=0), ValueError, "no workers"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(buffer=0), ValueError, "buffer must be >= 1"),
    (dict(stride=4, buffer=3), ValueError, "buffer (3) must be >= stride (4)"),
    (dict(name=3), TypeError, "name must be a string"),
    (dict(start_method="telepathy"), ValueError, "start_method must be one of"),
])
def test_invalid_settings_are_refused_at_construction(kwargs, error, words):
    with pytest.raises(error) as info:
        IMap(**kwargs)
    assert words in str(info.value)


def test_func_without_iterable_and_the_reverse():
    with pytest.raises(ValueError, match="give both"):
        IMap(add1)
    with pytest.raises(ValueError, match="give both"):
        IMap(iterable=[1, 2])


def test_empty_sequence_refused_but_empty_generator_ends(pool_options):
    with pytest.raises(ValueError, match="empty"):
        IMap(add1, [], **pool_options)
    with IMap(add1, iter([]), **pool_options) as pool:
        with pytest.raises(StopIteration):
            pool.next()


def test_buffer_default_stride_follows_a_small_buffer():
    pool = IMap(worker_num=2, buffer=10)
    assert pool.stride == 10


def test_func_and_iterable_start_at_once_like_imap(pool_options):
    with IMap(add1, range(20), **pool_options) as pool:
        assert pool.started
        assert list(pool) == list(range(1, 21))


def test_args_and_kwargs(pool_options):
    def power(x, exponent, offset=0):
        return x ** exponent + offset
    with IMap(power, range(5), args=(2,), kwargs={"offset": 1}, **pool_options) as pool:
        assert list(pool) == [1, 2, 5, 10, 17]


@pytest.mark.parametrize("args, kwargs, words", [
    ("ab", None, "args must be a tuple"),
    (None, [("a", 1)], "kwargs must be a dict"),
])
def test_bad_args_kwargs(args, kwargs, words):
    pool = IMap(worker_type="thread", worker_num=1)
    with pytest.raises(TypeError, match=words):
        pool.add_task(add1, [1], args=args, kwargs=kwargs)


def test_add_task_checks_func_and_iterable():
    pool = IMap(worker_type="thread", worker_num=1)
    with pytest.raises(TypeError, match="callable"):
        pool.add_task(3, [1])
    with pytest.raises(TypeError, match="not iterable"):
        pool.add_task(add1, 5)


def test_unpicklable_function_is_refused_when_added_to_a_process_pool():
    counter = (i for i in range(10**6))   # generators cannot be pickled, even by dill

    def uses_lock(x):
        return x + 0 * next(counter)
    pool = IMap(worker_num=1)
    with pytest.raises(TypeError, match="cannot be pickled.*worker_type='thread'"):
        pool.add_task(uses_lock, [1])
    thread_pool = IMap(worker_type="thread", worker_num=1)
    thread_pool.add_task(uses_lock, [1, 2])
    with thread_pool:
        thread_pool.start()
        assert list(thread_pool) == [1, 2]


def test_add_and_pop_tasks():
    pool = IMap(worker_type="thread", worker_num=1)
    for _ in range(3):
        pool.add_task(add1, [1, 2])
    pool.pop_task(1)
    assert len(pool._tasks) == 2
    pool.pop_task(2)
    assert len(pool._tasks) == 0
    for _ in range(3):
        pool.add_task(add1, [1], track=True)
    pool.pop_task(True)
    assert pool._tasks == [] and pool._tasks_tracked == {}


def test_add_while_running_but_pop_only_before_start(pool_options):
    with IMap(add1, range(3), **pool_options.with_workers(1)) as pool:
        later = pool.add_task(add1, [10])          # allowed while the IMap runs
        assert list(later) == [11] and list(pool) == [1, 2, 3]
        with pytest.raises(RuntimeError, match="before start"):
            pool.pop_task(1)
        with pytest.raises(RuntimeError, match="already started"):
            pool.start()


def test_next_before_start_and_after_stop_is_an_error(pool_options):
    pool = IMap(**pool_options.with_workers(1))
    pool.add_task(add1, [1, 2, 3])
    with pytest.raises(RuntimeError, match="not started"):
        pool.next()
    pool.start()
    assert [pool.next(), pool.next(), pool.next()] == [2, 3, 4]
    with pytest.raises(StopIteration):
        pool.next()
    pool.stop(ends=[0])
    with pytest.raises(RuntimeError, match="not started"):
        pool.next()


def test_stop_iteration_is_repeated(pool_options):
    with IMap(add1, [1], **pool_options.with_workers(1)) as pool:
        assert pool.next() == 2
        for _ in range(3):
            with pytest.raises(StopIteration):
                pool.next()
        assert list(pool) == []


def test_stop_when_not_started_is_a_no_op(pool_options):
    pool = IMap(**pool_options)
    pool.stop()
    pool.stop(forced=True)


def test_reusable_after_stop(pool_options):
    pool = IMap(**pool_options)
    for round_ in range(3):
        pool.add_task(add1, range(round_ * 10, round_ * 10 + 10))
        pool.start()
        assert list(pool) == list(range(round_ * 10 + 1, round_ * 10 + 11))
        pool.stop()
        assert pool._tasks == [] and not pool.started


def test_stop_right_after_start_and_forced(pool_options):
    for forced in (False, True):
        pool = IMap(**pool_options)
        pool.add_task(add1, range(100000))
        pool.start()
        pool.stop(forced=forced)
        assert not pool.started


def test_call_is_add_task_and_get_task_shares_position(pool_options):
    pool = IMap(**pool_options)
    first = pool(add1, range(6))
    with pool:
        pool.start()
        other = pool.get_task(0)
        assert [next(first), next(other), next(first), next(other)] == [1, 2, 3, 4]
        assert list(other) == [5, 6]
    with pytest.raises(ValueError, match="no task"):
        pool.get_task(5)


def test_context_manager_stops(pool_options):
    with IMap(add1, range(1000), **pool_options) as pool:
        assert pool.next() == 1
    assert not pool.started


def test_track_keeps_results_by_index(pool_options):
    def square(x):
        return x * x
    pool = IMap(**pool_options)
    pool.add_task(square, range(10), track=True)
    with pool:
        pool.start()
        assert list(pool) == [i * i for i in range(10)]
        assert pool._tasks_tracked[0] == {i: i * i for i in range(10)}


def test_repr_and_task_iterator_repr():
    pool = IMap(worker_type="thread", worker_num=1, name="mine")
    task = pool.add_task(add1, [1])
    assert "mine" in repr(pool) and "idle" in repr(pool)
    assert "task 0" in repr(task)


# -- @imports ----------------------------------------------------------------------------

def test_imports_binds_modules_and_keeps_attribute():
    @imports(["re", "os.path", "ysy,sys"])
    def uses(inbox):
        return re.escape("."), path.join("a", "b"), ysy.maxsize  # noqa: F821
    assert uses(None) == (r"\.", os.path.join("a", "b"), __import__("sys").maxsize)
    assert uses.imports == ["re", "os.path", "ysy,sys"]


def test_imports_pair_form():
    @imports([("re", []), ("os", ["sep"])])
    def joined(inbox):
        return re.sub("x", sep, inbox)  # noqa: F821
    assert joined("axb") == "a" + os.sep + "b"
    assert joined.imports == [("re", []), ("os", ["sep"])]


def test_imports_missing_module_names_it():
    with pytest.raises(ImportError, match="no_such_module_xyz"):
        @imports(["no_such_module_xyz"])
        def broken(inbox):
            return inbox


def test_imports_bad_argument():
    with pytest.raises(TypeError, match="list of module names"):
        imports("re")
    with pytest.raises(TypeError, match="neither a module name"):
        imports([3])


def test_imported_function_runs_in_processes_of_every_start_method():
    for method in ("fork", "spawn"):
        with IMap(_uses_json, ['{"a": 1}', "[2]"], worker_num=1, start_method=method) as pool:
            assert list(pool) == [{"a": 1}, [2]]


@imports(["json"])
def _uses_json(text):
    return json.loads(text)  # noqa: F821


def test_buffer_size_and_use_are_visible_while_running(pool_options):
    pool = IMap(**pool_options.with_workers(1), stride=2, buffer=6)
    assert pool.buffer_size is None and pool.buffer_used is None
    pool.add_task(add1, range(100))
    with pool:
        pool.start()
        assert pool.buffer_size == 6
        assert pool.next() == 1
        assert 0 <= pool.buffer_used <= 6
        list(pool)
        assert pool.buffer_used == 0
    assert pool.buffer_used is None
