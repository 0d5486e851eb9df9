"""Shared fixtures: pool kinds, and a guard that fails any test leaving things behind.

The guard compares, before and after each test, the live threads, this process's child
processes and the entries of /dev/shm. A leftover is given a few seconds to go away (a
worker exiting, a daemon thread finishing); what remains fails the test and is cleaned up
(child processes are killed) so one leaking test does not break the next ones.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from remote_servers import ServerProcess
from remote_servers import forking_server  # noqa: F401  (a session fixture, re-exported)

SETTLE_SECONDS = 10.0
# multiprocessing's own singletons: started on first use of spawn/forkserver, they live
# until the interpreter exits (and die with it); they are not leaks of ours
STDLIB_HELPERS = (b"multiprocessing.resource_tracker", b"multiprocessing.forkserver")


def _is_stdlib_helper(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return False
    return any(marker in cmdline for marker in STDLIB_HELPERS)


def child_pids() -> set[int]:
    """PIDs of this process's live (non-zombie) descendants, read from /proc.

    multiprocessing's own helpers (fork server, resource tracker) are not counted, but the
    workers the fork server starts for us are.
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
    return {int(pid) for pid in found - helpers}


def shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


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


@pytest.fixture(params=["thread", "process"])
def worker_type(request: pytest.FixtureRequest) -> str:
    """Runs a test on a thread pool and on a process pool."""
    kind: str = request.param
    return kind


@pytest.fixture(params=["thread", "process", "remote"])
def pool_options(request: pytest.FixtureRequest,
                 forking_server: ServerProcess,  # noqa: F811 - the fixture imported above
                 ) -> dict[str, Any]:
    """IMap options for a 2-worker pool of each kind: threads, processes, and two slots on
    a loopback RPyC server (session-scoped, so it exists before the leak guard looks)."""
    if request.param == "remote":
        return dict(worker_num=0, worker_remote=[(forking_server.address, 2)])
    return dict(worker_type=request.param, worker_num=2)
