"""dump_item / load_item across processes and threads: IMap chains, a Plumber pipeline,
clean-up inside pool workers that keep running, and when the dumping process exits."""
import os
import subprocess
import sys
import textwrap

import pytest

from imap import IMap
from papy import Piper, Plumber, Worker
from papy.workers.transfer import KINDS, dump_item, load_item, sweep_leftovers

from test_workers_transfer import location_exists, papy_entries, wait_until

ITEMS = [bytes([i % 256]) * (200_000 + i) for i in range(12)] + ["text", {"k": [1, 2]}]


def dump(item, kind, timeout=300.0):
    return dump_item([item], type=kind, timeout=timeout)


def load(ref):
    return load_item([ref])


def dump_with_pid(item, kind, timeout):
    return os.getpid(), dump_item([item], type=kind, timeout=timeout)


@pytest.fixture
def nothing_left():
    before = papy_entries()
    yield
    assert wait_until(lambda: not papy_entries() - before), papy_entries() - before


@pytest.mark.parametrize("kind", KINDS)
def test_dump_in_one_task_load_in_a_chained_task(worker_type, kind, nothing_left):
    with IMap(worker_type=worker_type, worker_num=2, stride=2, buffer=4) as pool:
        refs = pool.add_task(dump, ITEMS, args=(kind,))
        loaded = pool.add_task(load, refs)
        pool.start()
        assert list(loaded) == ITEMS


@pytest.mark.parametrize("kind", KINDS)
def test_dump_and_load_pipers_in_a_plumber(worker_type, kind, nothing_left):
    with IMap(worker_type=worker_type, worker_num=2, stride=2) as pool:
        dumper = Piper(Worker(dump_item, kwargs={"type": kind}), parallel=pool)
        loader = Piper(Worker(load_item), parallel=pool)
        plumber = Plumber()
        plumber.add_pipe((dumper, loader))
        plumber.start([ITEMS])
        try:
            assert list(loader) == ITEMS
        finally:
            plumber.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_dumped_here_loaded_by_a_worker_process(kind, nothing_left):
    refs = [dump_item([item], type=kind) for item in ITEMS]
    with IMap(load, refs, worker_type="process", worker_num=2, stride=2) as pool:
        assert list(pool) == ITEMS
    # here, the janitor hears of the loads by looking (file, shm), the fifo writers and
    # tcp servers end: the leak guard of conftest checks that no thread is left


@pytest.mark.parametrize("kind", KINDS)
def test_dumped_by_a_worker_process_loaded_here(kind, nothing_left):
    with IMap(dump, ITEMS, args=(kind,), worker_type="process", worker_num=2) as pool:
        refs = list(pool)
        assert [load_item([ref]) for ref in refs] == ITEMS


@pytest.mark.parametrize("kind", KINDS)
def test_unloaded_items_expire_inside_a_worker_that_keeps_running(kind, nothing_left):
    with IMap(dump_with_pid, range(6), args=(kind, 0.3), worker_type="process",
              worker_num=2) as pool:
        dumped = list(pool)
        assert wait_until(lambda: not any(location_exists(ref) for _, ref in dumped))
        for pid, _ in dumped:            # removed by the workers' janitors, not at exit
            os.kill(pid, 0)              # (raises ProcessLookupError if it had exited)


@pytest.mark.parametrize("kind", KINDS)
def test_unloaded_items_are_removed_when_the_worker_exits(kind, nothing_left):
    with IMap(dump, range(6), args=(kind,), worker_type="process", worker_num=2) as pool:
        refs = list(pool)
        assert all(location_exists(ref) for ref in refs if ref.kind != "tcp")
    # the IMap stopped its workers; each one removed what it still held
    assert not any(location_exists(ref) for ref in refs)


def test_unloaded_items_are_removed_when_a_plain_program_exits(tmp_path, nothing_left):
    program = textwrap.dedent(f"""
        from papy.workers.transfer import dump_item
        for kind in {KINDS!r}:
            print(repr(tuple(dump_item([b"left behind"], type=kind, timeout=None))))
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, cwd=os.getcwd(), check=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    refs = [eval(line) for line in done.stdout.splitlines()]  # our own output
    assert [ref[0] for ref in refs] == list(KINDS)
    for kind, location, *_ in refs:
        if kind == "shm":
            assert not os.path.exists("/dev/shm" + location)
        elif kind != "tcp":
            assert not os.path.exists(location)


def test_sweep_leftovers_removes_what_a_killed_process_left(tmp_path, nothing_left):
    program = textwrap.dedent(f"""
        import os, signal
        from papy.workers.transfer import dump_item
        for kind in ("file", "fifo", "shm"):
            print(dump_item([b"orphan"], type=kind, dir={str(tmp_path)!r}).location, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)       # no clean-up at all
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == -9
    file, fifo, shm = done.stdout.split()
    assert os.path.exists(file) and os.path.exists(fifo) and os.path.exists("/dev/shm" + shm)
    removed = sweep_leftovers(str(tmp_path))
    assert {file, fifo, "/dev/shm" + shm} <= set(removed)   # (and other dead processes')
    assert os.listdir(tmp_path) == [] and not os.path.exists("/dev/shm" + shm)
    assert not {file, fifo, "/dev/shm" + shm} & set(sweep_leftovers(str(tmp_path)))
