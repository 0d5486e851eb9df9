"""imap.Executor: the standard concurrent.futures behaviours (after CPython's
test_concurrent_futures: executor, shutdown, wait, as_completed), on thread, process and
remote pools (issue 15)."""
import concurrent.futures as cf
import itertools
import operator
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

from imap import Executor, IMap, WorkerDiedError

DEADLINE = 30.0     # a generous bound against hangs, never a speed check
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def capture(*args, **kwargs):
    return args, kwargs


def timeout_on_one(x):
    if x == 1:
        raise TimeoutError
    return x


class MyObject:
    def my_method(self):
        pass


def make_dummy_object(_):
    return MyObject()


class FalseyBoolError(Exception):
    def __bool__(self):
        return False


class FalseyLenError(Exception):
    def __len__(self):
        return 0


def raiser(exception, msg="std"):
    raise exception(msg)


def die(code):
    os._exit(code)


@pytest.fixture(params=["thread", "process", "remote"])
def kind(request):
    return request.param


@pytest.fixture
def executor(kind, forking_server):
    if kind == "remote":
        made = Executor(worker_num=0, worker_remote=[(forking_server.address, 2)])
    else:
        made = Executor(max_workers=2, worker_type=kind)
    yield made
    made.shutdown(wait=True)


@pytest.fixture
def local_executor(worker_type):
    """Calls of this module's functions: local pools only (a remote server cannot import
    this test module)."""
    made = Executor(max_workers=2, worker_type=worker_type)
    yield made
    made.shutdown(wait=True)


# -- submit and map ---------------------------------------------------------------------------

def test_submit(executor):
    future = executor.submit(pow, 2, 8)
    assert future.result(DEADLINE) == 256
    assert isinstance(future, cf.Future)


def test_submit_keyword(local_executor):
    assert local_executor.submit(operator.mul, 2, 8).result(DEADLINE) == 16
    future = local_executor.submit(capture, 1, self=2, fn=3)
    assert future.result(DEADLINE) == ((1,), {"self": 2, "fn": 3})
    with pytest.raises(TypeError):
        local_executor.submit(fn=capture, arg=1)
    with pytest.raises(TypeError):
        local_executor.submit(arg=1)


def test_map(executor):
    assert list(executor.map(pow, range(10), range(10))) == list(map(pow, range(10),
                                                                      range(10)))
    assert list(executor.map(pow, range(10), range(10), chunksize=3)) == list(
        map(pow, range(10), range(10)))
    with pytest.raises(ValueError, match="chunksize"):
        executor.map(abs, [1], chunksize=0)


def test_map_exception_in_place_and_the_iteration_goes_on(executor):
    for chunksize in (1, 3):
        results = executor.map(divmod, [5, 5, 5, 5], [2, 3, 0, 5], chunksize=chunksize)
        assert next(results) == (2, 1)
        assert next(results) == (1, 2)
        with pytest.raises(ZeroDivisionError) as caught:
            next(results)
        assert caught.value.item == (5, 0)       # the arguments of the failing call
        assert next(results) == (1, 0)
        with pytest.raises(StopIteration):
            next(results)
        with pytest.raises(StopIteration):
            next(results)


def test_map_timeout_from_callable_is_not_the_maps(local_executor):
    for timeout in (None, DEADLINE):
        results = local_executor.map(timeout_on_one, [0, 1, 2, 3], timeout=timeout)
        assert next(results) == 0
        with pytest.raises(TimeoutError):
            next(results)
        assert [next(results), next(results)] == [2, 3]
        with pytest.raises(StopIteration):
            next(results)


def test_map_timeout_cancels_the_rest(executor):
    results = executor.map(time.sleep, [0, 0, 2, 0], timeout=0.5)
    got = []
    with pytest.raises(TimeoutError):
        for value in results:
            got.append(value)
    assert got in ([None, None], [None], [])
    with pytest.raises(StopIteration):
        next(results)


def test_map_close(executor):
    for chunksize in (1, 3):
        results = executor.map(divmod, [5, 5, 5, 5], [2, 0, 3, 5], chunksize=chunksize)
        assert next(results) == (2, 1)
        results.close()
        with pytest.raises(StopIteration):
            next(results)


def test_map_buffersize_validation(executor):
    for buffersize in ("foo", 2.0):
        with pytest.raises(TypeError, match="buffersize must be an integer or None"):
            executor.map(str, range(4), buffersize=buffersize)
    for buffersize in (0, -1):
        with pytest.raises(ValueError, match="buffersize must be None or > 0"):
            executor.map(str, range(4), buffersize=buffersize)


def test_map_buffersize(executor):
    for buffersize in (1, 2, 4, 8):
        assert list(executor.map(str, range(4), buffersize=buffersize)) == ["0", "1", "2",
                                                                            "3"]
        assert list(executor.map(operator.add, range(4), range(4),
                                 buffersize=buffersize)) == [0, 2, 4, 6]
    endless = executor.map(str, itertools.count(), buffersize=2)
    assert [next(endless), next(endless), next(endless)] == ["0", "1", "2"]
    endless.close()
    both = executor.map(operator.add, itertools.count(), itertools.count(), buffersize=2)
    assert [next(both), next(both), next(both)] == [0, 2, 4]
    both.close()
    assert next(executor.map(str, [], buffersize=2), None) is None
    assert next(executor.map(str, buffersize=2), None) is None


def test_map_buffersize_reads_only_that_far_ahead(executor):
    ints = iter(range(4))
    executor.map(str, ints, buffersize=2)
    executor.shutdown(wait=True)
    assert next(ints) == 2


def test_map_without_buffersize_reads_every_input_at_once(executor):
    ints = iter(range(4))
    results = executor.map(str, ints)
    assert next(ints, None) is None
    assert list(results) == ["0", "1", "2", "3"]


def test_shutdown_race_issue12456(executor):
    executor.map(str, [2] * 3)
    executor.shutdown()


def test_no_stale_references(local_executor):
    my_object = MyObject()
    collected = threading.Event()
    callback = weakref.ref(my_object, lambda obj: collected.set())  # noqa: F841
    local_executor.submit(my_object.my_method)      # the future is dropped at once
    del my_object
    assert collected.wait(DEADLINE), "a stale reference kept the object alive"


def test_free_reference(local_executor):
    for obj in local_executor.map(make_dummy_object, range(10)):
        ref = weakref.ref(obj)
        del obj
        assert ref() is None, "the iterator keeps a reference to a result it gave"


def test_swallows_no_falsey_exception(local_executor):
    with pytest.raises(FalseyBoolError, match="boolbool"):
        local_executor.submit(raiser, FalseyBoolError, "boolbool").result(DEADLINE)
    with pytest.raises(FalseyLenError, match="lenlen"):
        local_executor.submit(raiser, FalseyLenError, "lenlen").result(DEADLINE)


def test_max_workers_must_be_positive():
    for number in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            Executor(max_workers=number)
    with pytest.raises(TypeError, match="not both"):
        Executor(max_workers=1, worker_num=1)


def test_a_failed_call_carries_the_call_and_the_worker_traceback(executor):
    error = executor.submit(divmod, 1, 0).exception(DEADLINE)
    assert isinstance(error, ZeroDivisionError)
    assert error.item == (divmod, (1, 0), {})
    assert "ZeroDivisionError" in error.traceback


# -- futures: wait, as_completed, callbacks, cancel ----------------------------------------

def test_wait_and_as_completed(executor):
    futures = [executor.submit(pow, 2, n) for n in range(20)]
    done, not_done = cf.wait(futures, timeout=DEADLINE)
    assert len(done) == 20 and not not_done
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=DEADLINE)) == sorted(
        2 ** n for n in range(20))
    first = executor.submit(divmod, 1, 0)
    done, _ = cf.wait([first], timeout=DEADLINE, return_when=cf.FIRST_EXCEPTION)
    assert first in done


def test_callbacks_run_once_the_call_is_done(executor):
    seen = []
    ran = threading.Event()
    future = executor.submit(abs, -4)

    def callback(done_future):
        seen.append(done_future.result())
        ran.set()
    future.add_done_callback(callback)
    assert ran.wait(DEADLINE) and seen == [4]


def test_cancel_a_call_not_started():
    gate = threading.Event()
    with Executor(max_workers=1, worker_type="thread") as executor:
        blocker = executor.submit(gate.wait, DEADLINE)
        later = [executor.submit(abs, -n) for n in range(100)]
        cancelled = [f for f in later if f.cancel()]
        assert cancelled and all(f.cancelled() for f in cancelled)
        gate.set()
        assert blocker.result(DEADLINE) is True
        assert all(f.result(DEADLINE) == i for i, f in enumerate(later) if f not in cancelled)


def test_a_dead_worker_costs_only_its_own_future(worker_type):
    if worker_type == "thread":
        pytest.skip("a thread cannot die on its own")
    with Executor(max_workers=2) as executor:
        doomed = executor.submit(die, 3)
        others = [executor.submit(pow, 2, n) for n in range(20)]
        with pytest.raises(WorkerDiedError):
            doomed.result(DEADLINE)
        assert [f.result(DEADLINE) for f in others] == [2 ** n for n in range(20)]
        assert executor.submit(abs, -1).result(DEADLINE) == 1     # not a broken executor


# -- shutdown ---------------------------------------------------------------------------------

def test_run_after_shutdown(executor):
    executor.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(pow, 2, 5)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.map(abs, [1])
    executor.shutdown()                               # idempotent


def test_hang_issue12364(executor):
    futures = [executor.submit(time.sleep, 0.01) for _ in range(50)]
    executor.shutdown()
    for future in futures:
        assert future.result(DEADLINE) is None


def test_cancel_futures(kind, forking_server):
    if kind == "remote":
        executor = Executor(worker_num=0, worker_remote=[(forking_server.address, 2)])
    else:
        executor = Executor(max_workers=2, worker_type=kind)
    futures = [executor.submit(time.sleep, 0.1) for _ in range(50)]
    executor.shutdown(cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    others = [f for f in futures if not f.cancelled()]
    assert len(cancelled) > 20
    assert all(f.done() and f.exception() is None for f in others)


def test_hang_gh94440_a_cancelled_future_does_not_block_shutdown():
    executor = Executor(max_workers=1, worker_type="thread")
    executor.submit(int).result(DEADLINE)
    executor.submit(int).cancel()
    started = time.monotonic()
    executor.shutdown(wait=True)
    assert time.monotonic() - started < DEADLINE


def test_shutdown_without_waiting_still_computes_the_results(kind, forking_server):
    if kind == "remote":
        executor = Executor(worker_num=0, worker_remote=[(forking_server.address, 2)])
    else:
        executor = Executor(max_workers=2, worker_type=kind)
    results = executor.map(abs, range(-5, 5))
    future = executor.submit(pow, 3, 3)
    executor.shutdown(wait=False)
    assert list(results) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    assert future.result(DEADLINE) == 27
    executor._runner.thread.join(DEADLINE)           # the pool is stopped by then


def test_a_dropped_executor_finishes_its_work_then_stops():
    executor = Executor(max_workers=2, worker_type="thread")
    results = executor.map(abs, range(-5, 5))
    runner = executor._runner
    del executor
    assert list(results) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    runner.thread.join(DEADLINE)
    assert not runner.thread.is_alive() and not runner.imap.started


def test_context_manager_shutdown(executor):
    with executor as entered:
        assert entered is executor
        assert list(executor.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError):
        executor.submit(abs, 1)


def test_an_executor_on_a_pool_you_own_leaves_it_running():
    pool = IMap(worker_type="thread", worker_num=2)
    other = pool.add_task(abs, range(-3, 0))
    with Executor(pool=pool) as executor:            # started here
        assert executor.pool is pool and pool.started
        assert executor.submit(pow, 2, 3).result(DEADLINE) == 8
    assert pool.started and list(other) == [3, 2, 1]
    assert [t.id for t in pool._tasks] == [other.task]     # its own tasks are gone
    pool.stop()
    with pytest.raises(TypeError, match="pool settings"):
        Executor(pool=pool, max_workers=2)


def run_script(body):
    code = textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.path.join(ROOT, "tests"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)


def sleep_and_print(seconds, message):
    time.sleep(seconds)
    # one write of the whole line: two processes share the pipe, and with
    # PYTHONUNBUFFERED print() would write the message and its newline apart
    os.write(1, (message + "\n").encode())


def test_interpreter_exit_waits_for_the_calls_scheduled():
    done = run_script("""
        from imap import Executor
        from test_imap_executor import sleep_and_print
        if __name__ == "__main__":
            executor = Executor(max_workers=2)
            executor.submit(sleep_and_print, 0.5, "apple")
            other = Executor(max_workers=1, worker_type="thread")
            other.submit(sleep_and_print, 0.5, "pear")
            other.shutdown(wait=False)
        """)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == ["apple", "pear"]
    assert "Traceback" not in done.stderr


def test_submit_after_interpreter_shutdown():
    done = run_script("""
        import atexit
        from imap import Executor

        @atexit.register
        def run_last():
            try:
                executor.submit(id, None)
            except RuntimeError:
                print("runtime-error")
                raise

        if __name__ == "__main__":
            executor = Executor(max_workers=1, worker_type="thread")
            executor.submit(id, 42).result()
        """)
    assert "RuntimeError: cannot schedule new futures" in done.stderr
    assert done.stdout.strip() == "runtime-error"
