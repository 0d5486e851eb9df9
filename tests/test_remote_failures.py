"""RemoteHandle failures: unreachable, mismatched, killed, dead and stopped servers."""
import os
import signal
import socket
import threading
import time

import pytest
from remote_servers import (ROOT, any_server, forking_server, make_task, open_handle,  # noqa: F401
                            servers, wait_for)

from imap import WorkerStartError
from imap.backends import _remote_args, _remote_connection, remote
from imap.backends.base import Batch, WorkerLost

pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _marked_sleep(path):
    """A function that creates ``path`` and then sleeps the item's number of seconds."""
    def work(seconds):
        open(path, "w").close()
        time.sleep(seconds)
        return seconds
    return work


class _When:
    """Run ``action`` in a thread as soon as ``path`` exists (the remote call is running)."""

    def __init__(self, path, action):
        self.thread = threading.Thread(target=self._run, args=(path, action), name="when")
        self.thread.start()

    def _run(self, path, action):
        if wait_for(lambda: os.path.exists(path), timeout=20):
            action()

    def join(self):
        self.thread.join(30)


def test_unreachable_server_raises_worker_start_error_naming_host_and_port():
    port = _free_port()
    handle = remote.RemoteHandle("127.0.0.1", port, timeout=5)
    started = time.monotonic()
    with pytest.raises(WorkerStartError, match=f"127.0.0.1:{port}.*ConnectionRefused"):
        handle.open()
    assert time.monotonic() - started < 5
    handle.close()


def test_version_mismatch_names_both_sides_and_the_host(any_server, monkeypatch):  # noqa: F811
    here = remote.local_versions()
    monkeypatch.setattr(_remote_connection, "local_versions", lambda: ("3.99", "6.9.9", here[2]))
    handle = remote.RemoteHandle("127.0.0.1", any_server.port, timeout=5)
    with pytest.raises(WorkerStartError) as info:
        handle.open()
    message = str(info.value)
    assert f"127.0.0.1:{any_server.port}" in message
    assert f"there Python {here[0]}, rpyc {here[1]}, dill {here[2]}" in message
    assert f"here Python 3.99, rpyc 6.9.9, dill {here[2]}" in message
    handle.close()


def test_server_without_dill_is_refused_with_a_remedy(servers, tmp_path):  # noqa: F811
    (tmp_path / "dill.py").write_text("raise ImportError('no dill on this test server')\n")
    server = servers("imap", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    handle = remote.RemoteHandle("127.0.0.1", server.port, timeout=5)
    with pytest.raises(WorkerStartError, match=r"dill is not installed on 127\.0\.0\.1:\d+.*"
                                               r"install dill=="):
        handle.open()


def test_kill_from_another_thread_ends_a_blocked_run_promptly(any_server, tmp_path):  # noqa: F811
    handle = open_handle(any_server, timeout=20)
    marker = tmp_path / "running"
    when = _When(marker, handle.kill)
    started = time.monotonic()
    try:
        with pytest.raises(WorkerLost, match="was killed"):
            handle.run(Batch(make_task(_marked_sleep(str(marker))), 0, [4]))
        assert time.monotonic() - started < 3.5
        with pytest.raises(WorkerLost, match="was killed"):
            handle.run(Batch(make_task(abs), 0, [1]))
        handle.open()                                      # what the pool does next
        assert handle.run(Batch(make_task(abs), 0, [-1]))[0] == [1]
    finally:
        when.join()
        handle.close()
    handle.kill()                                          # closed: nothing to do
    handle.kill()


def test_an_item_that_kills_its_connection_process(forking_server):  # noqa: F811
    handle = open_handle(forking_server, timeout=20)
    try:
        with pytest.raises(WorkerLost, match="lost its connection"):
            handle.run(Batch(make_task(lambda code: os._exit(code)), 0, [3]))
        handle.open()
        assert handle.run(Batch(make_task(abs), 0, [-2]))[0] == [2]
    finally:
        handle.close()


@pytest.mark.parametrize("kind", ["imap", "rpyc"])
def test_server_killed_mid_run_raises_worker_lost(servers, kind, tmp_path):  # noqa: F811
    server = servers(kind)
    handle = open_handle(server, timeout=20)
    marker = tmp_path / "running"
    when = _When(marker, lambda: server.signal_group(signal.SIGKILL))
    try:
        with pytest.raises(WorkerLost, match="lost its connection"):
            handle.run(Batch(make_task(_marked_sleep(str(marker))), 0, [20]))
        with pytest.raises(WorkerStartError, match=f"127.0.0.1:{server.port}"):
            handle.open()
    finally:
        when.join()
        handle.close()


@pytest.mark.parametrize("kind", ["imap", "rpyc"])
def test_stopped_server_is_detected_by_the_timeout(servers, kind, tmp_path):  # noqa: F811
    server = servers(kind)
    timeout = 1.0
    busy, idle = open_handle(server, timeout=timeout), open_handle(server, timeout=timeout)
    marker = tmp_path / "running"
    when = _When(marker, lambda: server.signal_group(signal.SIGSTOP))
    try:
        started = time.monotonic()
        with pytest.raises(WorkerLost, match=r"no reply and no heartbeat for 1 s.*remote_timeout"):
            busy.run(Batch(make_task(_marked_sleep(str(marker))), 0, [20]))
        assert timeout <= time.monotonic() - started < timeout + 10
        for handle in (busy, idle):                       # neither close may wait long
            started = time.monotonic()
            handle.close()
            assert time.monotonic() - started < remote.CLOSE_TIMEOUT + 1.5
        started = time.monotonic()
        with pytest.raises(WorkerStartError, match=f"127.0.0.1:{server.port}"):
            busy.open()                                    # accepted by the kernel, no reply
        assert time.monotonic() - started < busy.connect_timeout + 5
    finally:
        when.join()
        busy.close()
        idle.close()
        server.signal_group(signal.SIGCONT)


def test_a_message_that_stops_halfway_is_an_eof():
    left, right = socket.socketpair()
    try:
        stream = _remote_args._Stream(left)
        left.settimeout(0.2)
        right.sendall(b"abc")
        with pytest.raises(EOFError, match="stopped sending in the middle of a message"):
            stream.read(10)
        assert stream.closed
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize("kind", ["imap", "rpyc"])
def test_a_forked_server_process_stops_computing_when_its_client_is_gone(servers, kind,  # noqa: F811
                                                                          tmp_path):
    server = servers(kind)
    baseline = len(server.group_pids())
    handle = open_handle(server, timeout=1.0)
    marker = tmp_path / "running"
    when = _When(marker, handle.kill)
    try:
        assert len(server.group_pids()) == baseline + 1
        with pytest.raises(WorkerLost, match="was killed"):
            handle.run(Batch(make_task(_marked_sleep(str(marker))), 0, [60]))
        assert wait_for(lambda: len(server.group_pids()) == baseline, timeout=15)
    finally:
        when.join()
        handle.close()


def test_killing_the_launcher_alone_ends_its_connections(servers, tmp_path):  # noqa: F811
    server = servers("imap")
    handle = open_handle(server, timeout=20)
    marker = tmp_path / "running"
    when = _When(marker, lambda: os.kill(server.pid, signal.SIGKILL))   # not the group
    try:
        with pytest.raises(WorkerLost, match="lost its connection"):
            handle.run(Batch(make_task(_marked_sleep(str(marker))), 0, [20]))
        server.proc.wait(10)
        assert wait_for(lambda: not server.group_pids(), timeout=10)    # PR_SET_PDEATHSIG
    finally:
        when.join()
        handle.close()


@pytest.mark.parametrize("kind, mode", [("imap", "forking"), ("rpyc", "forking"),
                                        ("imap", "threaded")])
def test_an_item_past_its_item_timeout_is_blamed_by_position(servers, kind, mode):  # noqa: F811
    server = servers(kind, mode)
    baseline = len(server.group_pids())
    handle = open_handle(server, timeout=20)
    task = make_task(lambda s: time.sleep(s) or s)
    task.item_timeout = 0.5
    try:
        assert handle.run(Batch(task, 0, [0.01, 0.02]))[:2] == ([0.01, 0.02], None)
        started = time.monotonic()
        with pytest.raises(WorkerLost) as info:
            handle.run(Batch(task, 10, [0.01, 0.02, 30, 0.01], tracked=True))
        assert 0.5 <= time.monotonic() - started < 10
        lost = info.value
        assert lost.position == 2 and lost.timed_out
        assert "after item 12 ran longer than 0.5 s" in lost.message
        if mode == "forking":
            assert lost.message.startswith("was killed")
            assert wait_for(lambda: len(server.group_pids()) == baseline, timeout=10)
        else:
            assert lost.message.startswith("was disconnected")
        handle.open()
        assert handle.run(Batch(task, 0, [0.01]))[0] == [0.01]
    finally:
        handle.close()
