"""RPyC servers in subprocesses for the remote tests (imported by tests/test_remote_*.py).

    test --start_server()--> python -c BOOT  (own session: start_new_session=True)
                               |- watchdog thread: stdin EOF (the test process died) -> killpg
                               `- imap.server main()  or  rpyc's own rpyc_classic CLI
    drain thread <--stdout/stderr pipes-- server and its forked children (kept for messages)

Servers listen on 127.0.0.1 only, on a port the kernel picks (--port 0): the launcher prints
``listening on HOST:PORT``, rpyc_classic logs ``server started on [HOST]:PORT``.

Teardown order (ServerProcess.stop): SIGTERM + SIGCONT to the whole process group, wait,
SIGKILL to the group, wait, join the drain thread, close the pipes; then check that no live
process of the group is left. The ``servers`` fixture stops every server a test started,
even when the test failed or timed out (pytest-timeout's signal method runs teardown).
"""
from __future__ import annotations

import collections
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from imap.backends.base import TaskSpec
    from imap.backends.remote import RemoteHandle

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BOOT = r"""
import os, signal, sys, threading
def _watch():
    while os.read(0, 4096):                      # raw reads: no buffer lock held at exit
        pass
    os.killpg(0, signal.SIGKILL)                 # EOF: the test process is gone
threading.Thread(target=_watch, daemon=True, name="stdin-watchdog").start()
kind, sys.argv = sys.argv[1], sys.argv[1:]
if kind == "imap":
    from imap.server import main
    sys.exit(main(sys.argv[1:]))
from rpyc.cli.rpyc_classic import main          # what the rpyc_classic command runs
main()
"""

_PORT_LINE = {"imap": re.compile(r"^listening on 127\.0\.0\.1:(\d+)$"),
              "rpyc": re.compile(r"server started on \[127\.0\.0\.1\]:(\d+)")}


class ServerProcess:
    """One server subprocess; ``port`` is known once the constructor returns."""

    def __init__(self, kind: str = "imap", mode: str = "forking", args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None) -> None:
        if kind not in _PORT_LINE:
            raise ValueError(kind)
        self.kind, self.mode = kind, mode
        argv = ["--host", HOST, "--port", "0", "--mode", mode, *args]
        # the project and tests/ importable there: functions of test modules go by reference
        path = [ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")]
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        environment.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, kind, *argv], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            env=environment, cwd=ROOT)
        self.lines: collections.deque[str] = collections.deque(maxlen=400)
        self.stdout_lines: list[str] = []
        self._found = threading.Event()
        self.port: int | None = None
        self._drain = threading.Thread(target=self._read_output, daemon=True,
                                       name=f"drain-{self.proc.pid}")
        self._drain.start()
        self._found.wait(START_TIMEOUT)
        if self.port is None:
            self.stop()
            raise RuntimeError(f"{kind} server did not start:\n{self.output()}")

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_output(self) -> None:
        pattern = _PORT_LINE[self.kind]
        stdout, stderr = self.proc.stdout, self.proc.stderr
        assert stdout is not None and stderr is not None  # both are pipes
        with selectors.DefaultSelector() as selector:
            for stream, label in ((stdout, "out"), (stderr, "err")):
                os.set_blocking(stream.fileno(), False)
                selector.register(stream, selectors.EVENT_READ, label)
            partial = {stdout.fileno(): b"", stderr.fileno(): b""}
            while selector.get_map():
                for key, _ in selector.select():
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    label = key.data
                    *complete, partial[key.fd] = (partial[key.fd] + chunk).split(b"\n")
                    for raw in complete:
                        line = raw.decode(errors="replace")
                        self.lines.append(f"[{label}] {line}")
                        if label == "out":
                            self.stdout_lines.append(line)
                        match = pattern.search(line)
                        if match and self.port is None:
                            self.port = int(match.group(1))
                            self._found.set()
        self._found.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def group_pids(self, include_zombies: bool = False) -> list[int]:
        """Processes of the server's process group (the server and its forked children)."""
        return group_members(self.proc.pid, include_zombies)

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Stop the server and every process of its group; never leaves one behind."""
        if self.proc.poll() is None or self.group_pids():
            self.signal_group(signal.SIGTERM)
            self.signal_group(signal.SIGCONT)         # a stopped process acts on SIGTERM
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                pass
            self.signal_group(signal.SIGKILL)
            self.proc.wait()
        deadline = time.monotonic() + 5
        while self.group_pids() and time.monotonic() < deadline:
            self.signal_group(signal.SIGKILL)
            time.sleep(0.05)
        self._drain.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        left = self.group_pids()
        assert not left, f"processes left behind by the {self.kind} server: {left}"


def group_members(pgid: int, include_zombies: bool = False) -> list[int]:
    """Pids whose process group is ``pgid`` (from /proc), zombies excluded by default."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and (include_zombies or state != "Z"):
            members.append(int(entry))
    return members


@pytest.fixture
def servers() -> Iterator[Callable[..., ServerProcess]]:
    """A factory: ``servers(kind='imap'|'rpyc', mode='forking'|'threaded', args=())``."""
    started: list[ServerProcess] = []

    def start(kind: str = "imap", mode: str = "forking", args: Sequence[str] = (),
              env: Mapping[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(kind, mode, args, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


SERVER_KINDS = [("imap", "forking"), ("rpyc", "forking"), ("imap", "threaded")]


@pytest.fixture(scope="session", params=SERVER_KINDS, ids=lambda kind: "-".join(kind))
def any_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A long-lived server of each kind, for tests that do not harm it.

    Session-scoped, so it starts before the leak guard's snapshot of each test.
    """
    server = ServerProcess(*request.param)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def forking_server() -> Iterator[ServerProcess]:
    """A long-lived forking launcher, for tests that do not harm it."""
    server = ServerProcess("imap", "forking")
    yield server
    server.stop()


def wait_for(predicate: Callable[[], object], timeout: float = 10.0,
             interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (for states only /proc can show)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def make_task(func: Callable[..., Any], *args: Any, task_id: int = 1,
              **kwargs: Any) -> TaskSpec:
    """A TaskSpec with its dill payload, as the IMap front end makes it."""
    import dill

    from imap.backends.base import TaskSpec
    return TaskSpec(task_id, func, args, kwargs,
                    payload=dill.dumps((func, args, kwargs), recurse=True))


def open_handle(server: ServerProcess, **options: Any) -> RemoteHandle:
    """An open RemoteHandle on ``server`` (the caller closes it)."""
    from imap.backends.remote import RemoteHandle
    assert server.port is not None  # known once the ServerProcess is made
    handle = RemoteHandle(HOST, server.port, **options)
    handle.open()
    return handle
