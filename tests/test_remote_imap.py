"""IMap end to end on remote workers: two loopback servers stand for two hosts."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from remote_servers import ROOT, ServerProcess, servers  # noqa: F401

from imap import IMap, RemoteTraceback, WorkerDiedError

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def two_hosts():
    """Two forking launchers on two ports (module-scoped: started before the leak guard)."""
    hosts = [ServerProcess("imap", "forking"), ServerProcess("rpyc", "forking")]
    yield hosts
    for host in hosts:
        host.stop()


def _drain(results):
    """Every result of a task iterator, exceptions in their place."""
    out = []
    while True:
        try:
            out.append(results.next(timeout=60))
        except StopIteration:
            return out
        except Exception as exc:  # noqa: BLE001 - an item's error, in its place
            out.append(exc)


def test_two_hosts_every_slot_connected_results_in_order(two_hosts):
    a, b = two_hosts
    before = [len(host.group_pids()) for host in two_hosts]
    scale = 3
    with IMap(worker_num=0, worker_remote=[(a.address, 2), [b.address, 2]]) as pool:
        results = pool.add_task(lambda x: x * scale, range(20_000))
        pool.start()
        assert [len(host.group_pids()) for host in two_hosts] == [n + 2 for n in before]
        assert list(results) == [x * 3 for x in range(20_000)]


def test_weaving_two_tasks_with_errors_in_place(two_hosts):
    a, b = two_hosts
    with IMap(worker_num=0, worker_remote=[(a.address, 1), (b.address, 1)], stride=7) as pool:
        inverse = pool.add_task(lambda x: 1 / (x % 5), range(40))
        shout = pool.add_task(str.upper, ["ab", "cd", 3, "ef"])
        pool.start()
        got_inverse, got_shout = _drain(inverse), _drain(shout)
    for x, got in zip(range(40), got_inverse, strict=True):     # a result per item
        if x % 5:
            assert got == 1 / (x % 5)
        else:
            assert isinstance(got, ZeroDivisionError)
            assert isinstance(got.__cause__, RemoteTraceback)
            assert "remote worker 127.0.0.1:" in str(got.__cause__)
    assert got_shout[:2] == ["AB", "CD"] and got_shout[3] == "EF"
    assert isinstance(got_shout[2], TypeError)


def test_chained_tasks_stop_and_restart(two_hosts):
    a, b = two_hosts
    pool = IMap(worker_num=0, worker_remote=[(a.address, 1), (b.address, 1)])
    try:
        for run in range(2):
            doubled = pool.add_task(lambda x: 2 * x, range(500))
            plus = pool.add_task(lambda x, k: x + k, doubled, args=(run,))
            pool.start()
            assert list(plus) == [2 * x + run for x in range(500)]
            pool.stop()
    finally:
        pool.stop()


def test_mixed_local_and_remote_workers(two_hosts):
    a, _ = two_hosts
    with IMap(worker_type="thread", worker_num=1, worker_remote=[(a.address, 1)],
              stride=4) as pool:
        where = pool.add_task(lambda x: (x, os.getppid()), range(2000))
        pool.start()
        results = list(where)
    assert [x for x, _ in results] == list(range(2000))
    assert {ppid for _, ppid in results} <= {a.pid, os.getppid()}


def _marked(path, host_pid, seconds):
    """Sleep ``seconds`` per item; on the host whose server is ``host_pid``, create ``path``."""
    def work(x):
        if os.getppid() == host_pid:
            open(path, "w").close()
        time.sleep(seconds)
        return x
    return work


def _signal_when(path, server, signum):
    """Send ``signum`` to ``server``'s group once ``path`` exists (polled by the consumer)."""
    def check():
        if os.path.exists(path) and not check.done:
            server.signal_group(signum)
            check.done = True
    check.done = False
    return check


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_a_server_lost_mid_run_loses_and_duplicates_nothing(servers, tmp_path, signum):  # noqa: F811
    doomed, survivor = servers("imap"), servers("rpyc")
    marker = tmp_path / "on-doomed"
    check = _signal_when(str(marker), doomed, signum)
    started = time.monotonic()
    with IMap(worker_num=0, worker_remote=[(doomed.address, 1), (survivor.address, 2)],
              stride=6, ordered=False, remote_timeout=1.0) as pool:
        results = pool.add_task(_marked(str(marker), doomed.pid, 0.01), range(300))
        pool.start()
        got = []
        for value in results:
            got.append(value)
            check()
    assert check.done, "the doomed server never ran an item"
    assert sorted(got) == list(range(300))
    assert time.monotonic() - started < 60


def test_no_worker_left_fails_the_items_in_place_naming_the_host(servers, tmp_path):  # noqa: F811
    doomed = servers("imap")
    marker = tmp_path / "on-doomed"
    check = _signal_when(str(marker), doomed, signal.SIGKILL)
    with IMap(worker_num=0, worker_remote=[(doomed.address, 1)], stride=5,
              remote_timeout=5) as pool:
        results = pool.add_task(_marked(str(marker), doomed.pid, 0.01), range(100))
        pool.start()
        got = []
        while True:
            try:
                got.append(results.next(timeout=60))
            except StopIteration:
                break
            except WorkerDiedError as exc:
                got.append(exc)
            check()
    assert len(got) == 100
    values = [g for g in got if not isinstance(g, Exception)]
    failed = [g for g in got if isinstance(g, WorkerDiedError)]
    assert values == list(range(len(values))) and failed
    assert all(f"127.0.0.1:{doomed.port}" in str(error) for error in failed)


MAIN_SCRIPT = """
import json, math, sys
from imap import IMap, imports

OFFSET = 10                                    # a __main__ global

def shifted(x):                                # a __main__ function using a global + module
    return math.floor(x / 2) + OFFSET

def make(k):                                   # a closure
    return lambda x: x * k

@imports(['hashlib'])
def digest(x):                                 # hashlib is not imported at module level
    return hashlib.md5(str(x).encode()).hexdigest()[:6]

if __name__ == '__main__':
    pool = IMap(worker_num=0, worker_remote=[(sys.argv[1], 2)])
    tasks = [pool.add_task(f, range(6)) for f in (shifted, make(3), lambda x: -x, digest)]
    pool.start()
    print(json.dumps([list(t) for t in tasks]))
    pool.stop()
"""


def test_main_module_functions_lambdas_closures_and_imports_run_remotely(two_hosts, tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text(MAIN_SCRIPT)
    result = subprocess.run([sys.executable, str(script), two_hosts[0].address],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=ROOT), cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    import hashlib
    assert json.loads(result.stdout) == [
        [x // 2 + 10 for x in range(6)], [3 * x for x in range(6)], [-x for x in range(6)],
        [hashlib.md5(str(x).encode()).hexdigest()[:6] for x in range(6)]]


def test_a_plumber_runs_its_pipers_on_a_remote_imap(two_hosts):
    papy = pytest.importorskip("papy")
    a, b = two_hosts

    def double(inbox):                          # nested: sent by value
        return inbox[0] * 2

    def plus(inbox, k):
        return inbox[0] + k

    pool = IMap(worker_num=0, worker_remote=[(a.address, 1), (b.address, 1)], stride=4)
    first = papy.Piper(papy.Worker(double), parallel=pool)
    second = papy.Piper(papy.Worker(plus, (1,)), parallel=pool)
    plumber = papy.Plumber()
    plumber.add_pipe((first, second))
    plumber.start([range(50)])
    try:
        assert list(second) == [2 * x + 1 for x in range(50)]
    finally:
        plumber.stop()
        pool.stop()


def test_item_timeout_fails_only_the_slow_item(two_hosts):
    import inspect
    if "item_timeout" not in inspect.signature(IMap.add_task).parameters:
        pytest.skip("IMap.add_task has no item_timeout yet")
    a, b = two_hosts
    items = [0.01] * 8 + [30] + [0.01] * 8
    with IMap(worker_num=0, worker_remote=[(a.address, 1), (b.address, 1)], stride=4) as pool:
        results = pool.add_task(lambda s: time.sleep(s) or s, items, item_timeout=1.0)
        pool.start()
        started = time.monotonic()
        got = _drain(results)
    assert time.monotonic() - started < 20
    assert got[:8] == items[:8] and got[9:] == items[9:]
    assert isinstance(got[8], TimeoutError) and "item_timeout" in str(got[8])
