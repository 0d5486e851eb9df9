"""RemoteHandle against live servers: our launcher and rpyc's own rpyc_classic CLI."""
import sys
import threading
import time

import pytest
from remote_servers import any_server, forking_server, make_task, open_handle  # noqa: F401

from imap import RemoteError, RemoteTraceback, SerializationError, imports
from imap.backends import remote
from imap.backends.base import Batch

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(any_server):  # noqa: F811
    return any_server


@pytest.fixture
def handle(server):
    handle = open_handle(server, timeout=20)
    yield handle
    handle.close()


def test_values_in_order_and_errors_in_place_with_remote_traceback(handle, server):
    offset = 3
    task = make_task(lambda x: 10 / (x - offset))
    values, errors, elapsed = handle.run(Batch(task, 0, [1, 2, 3, 4, 5]))
    assert values == [-5.0, -10.0, None, 10.0, 5.0]
    assert list(errors) == [2] and isinstance(errors[2], ZeroDivisionError)
    cause = errors[2].__cause__
    assert isinstance(cause, RemoteTraceback)
    assert f"remote worker 127.0.0.1:{server.port} slot 1" in str(cause)
    assert "ZeroDivisionError" in str(cause) and "10 / (x - offset)" in str(cause)
    assert elapsed >= 0


def test_closures_args_kwargs_and_repeated_batches(handle):
    def make(scale):
        def work(x, add, power=1):
            return (x * scale + add) ** power
        return work
    task = make_task(make(3), 1, power=2)
    for start in (0, 5, 10):
        items = list(range(start, start + 5))
        assert handle.run(Batch(task, start, items)) [:2] == (
            [(x * 3 + 1) ** 2 for x in items], None)


def test_imports_decorated_function_imports_on_the_server(handle):
    @imports(["re", "os.path"])
    def grep(line):
        return bool(re.search(r"\d", line)), path.basename("/a/b")  # noqa: F821
    values, errors, _ = handle.run(Batch(make_task(grep), 0, ["a1", "bb"]))
    assert errors is None and values == [(True, "b"), (False, "b")]


def test_function_is_shipped_once_per_connection(handle):
    task = make_task(lambda x: -x)
    assert handle.run(Batch(task, 0, [1]))[0] == [-1]
    task.payload = b"not a pickle: the server must use the function it already has"
    assert handle.run(Batch(task, 1, [2]))[0] == [-2]


def test_empty_batch(handle):
    assert handle.run(Batch(make_task(abs), 0, []))[:2] == ([], None)


def test_calls_stay_bounded_for_big_batches_and_replies(handle, monkeypatch):
    sizes = []
    call = remote.RemoteHandle._call

    def spy(self, function, *args):
        sizes.append(sum(len(a) for a in args if isinstance(a, bytes)))
        reply = call(self, function, *args)
        sizes.append(len(reply[1] if isinstance(reply, tuple) else reply or b""))
        return reply

    monkeypatch.setattr(remote.RemoteHandle, "_call", spy)
    items = [bytes([i]) * 100_000 for i in range(40)]           # 4 MB in, 8 MB out
    values, errors, _ = handle.run(Batch(make_task(lambda b: b * 2), 0, items))
    assert errors is None and values == [b * 2 for b in items]
    calls = len(sizes) // 2                   # >= 4 calls up, 8 down, one of them both ways
    assert max(sizes) <= remote.CHUNK + 1000 and calls >= 4 + 8 - 1


def test_unpicklable_item_fails_in_place(handle):
    lock = threading.Lock()
    values, errors, _ = handle.run(Batch(make_task(lambda x: x), 7, [1, lock, 3]))
    assert values == [1, None, 3]
    assert isinstance(errors[1], SerializationError) and "item 8 of task 1" in str(errors[1])


def _client_only_module(tmp_path, monkeypatch, name):
    (tmp_path / f"{name}.py").write_text(
        "class Thing:\n    pass\n\ndef double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return __import__(name)


def test_item_that_cannot_be_unpickled_on_the_server_fails_in_place(handle, tmp_path,
                                                                      monkeypatch):
    module = _client_only_module(tmp_path, monkeypatch, "client_only_items")
    values, errors, _ = handle.run(Batch(make_task(lambda x: x), 0, [1, module.Thing(), 3]))
    assert values == [1, None, 3] and list(errors) == [1]
    assert isinstance(errors[1], SerializationError)
    assert "cannot be unpickled on the remote worker" in str(errors[1])


def test_function_that_cannot_be_loaded_on_the_server_fails_every_item(handle, tmp_path,
                                                                        monkeypatch):
    module = _client_only_module(tmp_path, monkeypatch, "client_only_funcs")
    values, errors, _ = handle.run(Batch(make_task(module.double), 0, [1, 2]))
    assert values == [None, None] and sorted(errors) == [0, 1]
    assert "cannot be loaded on the remote worker" in str(errors[0])
    assert "client_only_funcs" in str(errors[0])


def test_function_that_cannot_be_pickled_here_fails_every_item(handle):
    generator = (i for i in range(3))                   # dill cannot pickle generators
    task = make_task(abs)
    task.payload, task.func = None, lambda x: (generator, x)[1]
    values, errors, _ = handle.run(Batch(task, 0, [1, 2]))
    assert values == [None, None] and isinstance(errors[0], SerializationError)
    assert "cannot be pickled with dill" in str(errors[0])


def test_result_that_cannot_be_pickled_on_the_server_fails_in_place(handle):
    task = make_task(lambda x: (lambda: x) if x == 1 else x)
    values, errors, _ = handle.run(Batch(task, 0, [0, 1, 2]))
    assert values == [0, None, 2] and isinstance(errors[1], SerializationError)


def test_exception_that_cannot_be_pickled_becomes_remote_error(handle):
    def fail(x):
        class LocalError(Exception):
            pass
        raise LocalError(f"bad {x}")
    _, errors, _ = handle.run(Batch(make_task(fail), 0, [5]))
    assert isinstance(errors[0], RemoteError) and "bad 5" in str(errors[0])
    assert errors[0].type_name.endswith("LocalError")


def test_long_evaluation_is_kept_alive_by_heartbeats(server):
    handle = open_handle(server, timeout=0.3)
    try:
        started = time.monotonic()
        values, errors, _ = handle.run(Batch(make_task(lambda s: time.sleep(s) or s), 0, [1.2]))
        assert (values, errors) == ([1.2], None)
        assert time.monotonic() - started >= 1.2           # four times the timeout
    finally:
        handle.close()


def test_close_and_open_again(server):
    handle = open_handle(server, timeout=20)
    task = make_task(lambda x: x + 1)
    assert handle.run(Batch(task, 0, [1]))[0] == [2]
    handle.close()
    handle.close()                                        # idempotent
    handle.open()
    try:
        assert handle.run(Batch(task, 0, [2]))[0] == [3]  # shipped again to the new connection
    finally:
        handle.close()


def test_one_connection_per_slot_runs_in_parallel_on_a_forking_server(forking_server):  # noqa: F811
    server = forking_server
    handles = [open_handle(server, timeout=20) for _ in range(2)]
    task = make_task(lambda s: __import__("os").getpid())
    try:
        pids = [h.run(Batch(task, 0, [0]))[0][0] for h in handles]
        assert len(set(pids)) == 2 and server.pid not in pids
    finally:
        for h in handles:
            h.close()
