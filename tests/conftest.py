"""Shared fixtures: pool kinds, and a guard that fails any test leaving things behind.

Pool kinds (``POOL_KINDS``: inline, thread, process, remote on a loopback server, dask): the
shared suites run on each through ``pool_options`` (IMap options) or, for Pipers,
``make_parallel``/``parallel`` (linear first, then an IMap of each kind). A test that holds
for some kinds only says why (its name, docstring or skip reason).

The guard compares, before and after each test, the live threads, this process's child
processes and the entries of /dev/shm. A leftover is given a few seconds to go away (a
worker exiting, a daemon thread finishing); what remains fails the test and is cleaned up
(child processes are killed) so one leaking test does not break the next ones.

Dask: the session's cluster (``dask_client``) is made and warmed up before any test looks,
so its threads are part of every test's "before"; Dask's two process-wide helper threads
(``DASK_SINGLETON_THREADS``) are never counted; the cluster's own threads are checked once,
when it closes at the end of the session.
"""
from __future__ import annotations

import importlib
import multiprocessing.process
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from imap.backends import _forkserver

#: the session's own folder for what must outlive one test (the module-level cache of
#: cache_functions.py, Dask's scratch space); set before any test module imports them, in
#: the environment so that subprocesses and remote servers use it too; removed at the end
SESSION_FOLDER = tempfile.mkdtemp(prefix="papy-tests-")
os.environ["PAPY_TEST_MODULE_CACHE"] = os.path.join(SESSION_FOLDER, "module-cache")
#: what a run of the suite must not leave in the temporary folder: multiprocessing's folders
#: (its forkserver's socket), papy's and tempfile's, Dask's scratch space
TEMP_LEFTOVERS = ("pymp-", "papy", "tmp", "dask-")
_temp_before: set[str] = set()

from remote_servers import ServerProcess  # noqa: E402  (after the environment is set)
from remote_servers import forking_server  # noqa: E402, F401  (a session fixture, re-exported)

try:     # imported as Any: its LocalCluster, Client, ... are not annotated
    distributed: Any = importlib.import_module("distributed")
except ImportError:  # the dask pool kind is skipped (pip install -e '.[test]' installs it)
    distributed = None
else:   # Dask's workers make their scratch space there (default: the temporary folder)
    importlib.import_module("dask").config.set({"temporary-directory": SESSION_FOLDER})

SETTLE_SECONDS = 10.0
# multiprocessing's own singletons: started on first use of spawn/forkserver, they live
# until the interpreter exits (and die with it); they are not leaks of ours
STDLIB_HELPERS = (b"multiprocessing.resource_tracker", b"multiprocessing.forkserver")
# Dask's process-wide thread pools of one thread each (distributed.utils._offload_executor,
# distributed.Future's callback executor): started on first use by any Client or worker,
# they live until the interpreter exits; not leaks of ours (the threads of a cluster and of
# a Client are checked: see dask_client below)
DASK_SINGLETON_THREADS = ("Dask-Offload_", "Dask-Callback-Thread_")


def _is_stdlib_helper(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return False
    return any(marker in cmdline for marker in STDLIB_HELPERS)


def child_pids() -> set[int]:
    """PIDs of this process's live (non-zombie) descendants, read from /proc.

    multiprocessing's own helpers (fork server, resource tracker) and imap's fork server are
    not counted, but the workers the fork servers start for us are.
    """
    parents: dict[str, list[str]] = {}
    helpers: set[str] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[0] != "Z":
            parents.setdefault(fields[1], []).append(entry)
            if _is_stdlib_helper(entry):
                helpers.add(entry)
    found: set[str] = set()
    todo = [str(os.getpid())]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    server = _forkserver.server_pid()   # imap's fork server lives as long as the program
    if server is not None:
        helpers.add(str(server))
    return {int(pid) for pid in found - helpers}


def shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate()
            if t.is_alive() and not t.name.startswith(DASK_SINGLETON_THREADS)}


@pytest.fixture(autouse=True)
def no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves threads, child processes or shared memory behind."""
    threads, children, shm = _threads(), child_pids(), shm_entries()
    yield
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        new_threads = _threads() - threads
        new_children = child_pids() - children
        new_shm = shm_entries() - shm
        if not (new_threads or new_children or new_shm) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in new_children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    problems = []
    if new_threads:
        problems.append(f"threads left running: {sorted(t.name for t in new_threads)}")
    if new_children:
        problems.append(f"child processes left running (now killed): {sorted(new_children)}")
    if new_shm:
        problems.append(f"/dev/shm entries left behind: {sorted(new_shm)}")
    if problems and not request.node.get_closest_marker("allow_leftovers"):
        pytest.fail("; ".join(problems), pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leftovers: the leak guard does not fail this test")
    _temp_before.update(_temp_entries())


def _temp_entries() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith(TEMP_LEFTOVERS)}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's folder, then name the entries the temporary folder has that it
    did not have before (a test or the library left them; this process's own multiprocessing
    folder excepted: multiprocessing removes it when the process exits). They are reported,
    not removed: another program sharing the folder may have made them. With
    ``PAPY_STRICT_TEMP=1`` they also fail the run (a check for a machine nothing else uses:
    the folder is shared, so it cannot be the default)."""
    shutil.rmtree(SESSION_FOLDER, ignore_errors=True)
    config: dict[str, Any] = getattr(multiprocessing.process.current_process(), "_config", {})
    own = config.get("tempdir")     # private, no public accessor that would not make one
    left = sorted(name for name in _temp_entries() - _temp_before
                  if own is None or name != os.path.basename(own))
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"new entries in {tempfile.gettempdir()} since the run began: {left}"
        if reporter is not None:
            reporter.write_line("\n" + message, red=True)
        if os.environ.get("PAPY_STRICT_TEMP") == "1":
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(params=["thread", "process"])
def worker_type(request: pytest.FixtureRequest) -> str:
    """A thread pool and a process pool, for suites that are not shared by every kind (the
    cache, the templates, the workers library); the shared suites use ``pool_options``."""
    kind: str = request.param
    return kind


#: every kind of pool; the shared suites run on each (``pool_options``, ``parallel``)
POOL_KINDS = ("inline", "thread", "process", "remote", "dask")


class PoolOptions(dict[str, Any]):
    """IMap options for a pool of one kind (``kind``), 2 workers unless asked otherwise."""

    def __init__(self, kind: str, server: ServerProcess, client: Any, workers: int = 2):
        self.kind = kind
        self._server, self._client = server, client
        if kind == "remote":
            super().__init__(worker_num=0, worker_remote=[(server.address, workers)])
        elif kind == "dask":
            super().__init__(worker_type="dask", worker_remote=client, worker_num=workers)
        else:
            super().__init__(worker_type=kind, worker_num=workers)

    def with_workers(self, workers: int) -> PoolOptions:
        """The same kind with ``workers`` workers (Dask: threads kept busy; inline: 1)."""
        return PoolOptions(self.kind, self._server, self._client, workers)


def _pool_options(kind: str, server: ServerProcess, client: Any) -> PoolOptions:
    if kind == "dask" and client is None:
        pytest.skip("distributed is not installed (pip install 'papy[dask]')")
    return PoolOptions(kind, server, client)


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A Client of a Dask LocalCluster of 2 in-process workers of 1 thread each, shared by
    the whole session (None when distributed is not installed).

    Session-scoped, so it exists before any test's leak guard looks; each worker runs one
    task here first, so the thread of its executor (which Dask starts at the first task and
    keeps) exists by then too. At the end of the session the cluster is closed and every
    thread it started must be gone (Dask's two process-wide singletons excepted)."""
    if distributed is None:
        yield None
        return
    before = set(threading.enumerate())
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       dashboard_address="127.0.0.1:0")
    client = distributed.Client(cluster, set_as_default=False)
    warm = [client.submit(abs, -k, workers=[address], pure=False)
            for k, address in enumerate(client.nthreads())]
    client.gather(warm)
    del warm
    yield client
    client.close()
    cluster.close()
    deadline = time.monotonic() + SETTLE_SECONDS
    while (left := {t.name for t in set(threading.enumerate()) - before if t.is_alive()
                    and not t.name.startswith(DASK_SINGLETON_THREADS)}) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"threads of the session's Dask cluster left running: {sorted(left)}"


@pytest.fixture(params=POOL_KINDS)
def pool_options(request: pytest.FixtureRequest,
                 forking_server: ServerProcess,  # noqa: F811 - the fixture imported above
                 dask_client: Any) -> PoolOptions:
    """IMap options for a 2-worker pool of each kind: inline (the reader's thread), threads,
    processes, two slots on a loopback RPyC server, and a Dask cluster of 2 in-process
    workers (both session-scoped, so they exist before the leak guard looks). A test that
    holds only for some kinds says why where it skips the others."""
    return _pool_options(request.param, forking_server, dask_client)


class ParallelMaker:
    """``make(stride=3, workers=2)``: a Piper's ``parallel`` of one kind: False (linear), or
    a new IMap of that kind; every IMap made is stopped after the test."""

    def __init__(self, kind: str, server: ServerProcess, client: Any) -> None:
        self.kind = kind
        self._server, self._client = server, client
        self.made: list[Any] = []

    def __call__(self, stride: int = 3, workers: int = 2) -> Any:
        if self.kind == "linear":
            return False
        from imap import IMap
        imap = IMap(**_pool_options(self.kind, self._server, self._client).with_workers(
            workers), stride=stride)
        self.made.append(imap)
        return imap

    def stop_all(self) -> None:
        for imap in self.made:
            imap.stop()


@pytest.fixture(params=("linear", *POOL_KINDS))
def make_parallel(request: pytest.FixtureRequest,
                  forking_server: ServerProcess,  # noqa: F811 - the fixture imported above
                  dask_client: Any) -> Iterator[ParallelMaker]:
    """``pool_options`` for Pipers: makes ``parallel=`` values of each kind, linear first."""
    maker = ParallelMaker(request.param, forking_server, dask_client)
    try:
        yield maker
    finally:
        maker.stop_all()


@pytest.fixture
def parallel(make_parallel: ParallelMaker) -> Any:
    """One ``parallel=`` value of each kind (``make_parallel()``): linear, then an IMap of
    each kind with stride 3 and 2 workers."""
    return make_parallel()
