"""The cache's behaviour at the edges (issue 13): corrupt and truncated entries, other
versions, unpicklable results, concurrent writers, a full disk; prune, clear, stats."""
from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import types

import cache_functions as cf
import pytest

import papy._cache as cache_module
import papy._cache_index as index_module
import papy._cache_packs as packs_module
from papy import Cache, IMap, Worker
from papy._cache_packs import parse_segment
from papy._worker import map_stage

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
HOUR_AGO = time.time() - 3600


def entry_files(root) -> list[str]:
    """The packs of entries (one per batch; here, one per call)."""
    found = []
    for folder, _, names in os.walk(os.path.join(root, "packs")):
        found += [os.path.join(folder, n) for n in names if not n.startswith(".")]
    return sorted(found)


def result_files(root) -> list[str]:
    found = []
    for folder, _, names in os.walk(os.path.join(root, "results")):
        found += [os.path.join(folder, n) for n in names if not n.startswith(".")]
    return sorted(found)


def read(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def hits_misses(cache) -> tuple[int, int]:
    stats = cache.stats()
    return stats["hits"], stats["misses"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
@pytest.mark.parametrize("function", [cf.square, cf.big])
def test_a_damaged_entry_is_a_miss_and_is_replaced(tmp_path, damage, function):
    cache = Cache(tmp_path)
    worker = Worker(function, cache=cache)
    expected = worker([7])
    [entry] = entry_files(tmp_path)
    data = read(entry)
    damaged = {"flip": data[:30] + bytes([data[30] ^ 0xFF]) + data[31:],
               "truncate": data[:len(data) // 2], "empty": b"",
               "garbage": os.urandom(len(data))}[damage]
    with open(entry, "wb") as handle:
        handle.write(damaged)
    assert worker([7]) == expected and hits_misses(cache) == (0, 2)
    assert worker([7]) == expected and hits_misses(cache) == (1, 2)     # replaced


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing"])
def test_a_damaged_result_file_is_a_miss_and_is_written_again(tmp_path, damage):
    cache = Cache(tmp_path)
    worker = Worker(cf.big, cache=cache)
    expected = worker([3])
    [result] = result_files(tmp_path)
    data = read(result)
    if damage == "missing":
        os.unlink(result)
    else:
        with open(result, "wb") as handle:
            handle.write(data[:-1] + b"?" if damage == "flip" else data[:100])
    assert worker([3]) == expected and hits_misses(cache) == (0, 2)
    assert read(result) == data
    assert worker([3]) == expected and hits_misses(cache) == (1, 2)


def test_results_are_stored_once_by_content(tmp_path):
    cache = Cache(tmp_path)
    worker = Worker(cf.big, cache=cache)
    worker([1])
    same = Worker(cf.big_again, cache=cache)      # another function, the same result
    assert same([1]) == worker([1])
    assert len(entry_files(tmp_path)) == 2 and len(result_files(tmp_path)) == 1
    assert cache.stats()["bytes"] == len(pickle.dumps(worker([1]), protocol=5))


def test_another_papy_or_python_version_is_a_miss(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    worker = Worker(cf.square, cache=cache)
    worker([5])
    monkeypatch.setattr(cache_module, "KEY_SALT", b"papy-cache format 1, papy 0.9, cpython-27\n")
    other = Worker(cf.square, cache=cache)
    assert other([5]) == 25 and hits_misses(cache) == (0, 2)


def test_an_entry_of_another_format_is_a_miss(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    worker = Worker(cf.square, cache=cache)
    worker([5])
    monkeypatch.setattr(packs_module, "PACK_FORMAT", packs_module.PACK_FORMAT + 1)
    assert worker([5]) == 25 and hits_misses(cache) == (0, 2)
    assert worker([5]) == 25 and hits_misses(cache) == (1, 2)


def test_a_result_that_cannot_be_unpickled_here_is_a_miss(tmp_path, monkeypatch):
    module = types.ModuleType("papy_test_gone")
    exec("class Thing:\n    def __init__(self, n):\n        self.n = n\n",
         module.__dict__)
    monkeypatch.setitem(sys.modules, "papy_test_gone", module)
    cache = Cache(tmp_path)

    @cache
    def make(n):
        return module.Thing(n)
    assert make(1).n == 1
    monkeypatch.delitem(sys.modules, "papy_test_gone")
    monkeypatch.setattr(module, "Thing", None)
    with pytest.raises(TypeError):       # the function runs again: its class is gone too
        make(1)
    assert hits_misses(cache) == (0, 2)


def test_two_processes_writing_one_entry_leave_it_whole(tmp_path):
    with IMap(worker_type="process", worker_num=4) as pool:
        task = pool.add_task(cf.hammer_entry, ([k] for k in range(4)), args=(str(tmp_path),))
        pool.start()
        assert list(task) == [0, 0, 0, 0]
    assert cf.read_hammered(str(tmp_path))[0] in range(4)
    leftovers = [n for _, _, names in os.walk(tmp_path) for n in names if n.startswith(".")]
    assert leftovers == []


def test_a_full_disk_degrades_to_no_caching_with_one_warning(tmp_path, monkeypatch, caplog):
    cache = Cache(tmp_path)
    worker = Worker(cf.square, cache=cache)
    worker([1])                                   # stored before the disk filled up

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(index_module, "write_all", full)
    with caplog.at_level(logging.WARNING, logger="papy"):
        assert [worker([i]) for i in range(6)] == [i * i for i in range(6)]
    warnings = [r.getMessage() for r in caplog.records if "cannot store" in r.getMessage()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    stats = cache.stats()
    assert (stats["hits"], stats["write_errors"]) == (1, 1)      # read still, one failure
    assert worker.cache_record.take().warnings == tuple(warnings)


FULL_DISK_SCRIPT = textwrap.dedent("""
    import logging, resource, signal, sys
    from papy import Cache, Worker
    import cache_functions as cf
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    cache = Cache(sys.argv[1])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
    worker = Worker(cf.big, cache=cache)
    print([len(worker([i])) for i in range(3)], cache.stats()["write_errors"])
""")


def test_a_file_size_limit_in_a_real_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
    done = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[4097,", "4097,", "4097]", "1"]
    assert done.stderr.count("cannot store results") == 1 and "File too large" in done.stderr


def entry_count(root) -> int:
    """The entries of every whole pack of every segment."""
    count = 0
    for path in entry_files(root):
        data = read(path)
        count += sum(pack.count for _, _, pack in parse_segment(data) if pack is not None)
    return count


def test_prune_removes_what_was_not_used_since_the_cache_was_made(tmp_path):
    first = Cache(tmp_path)
    worker = Worker(cf.big, cache=first)
    for i in range(3):
        worker([i])
    for path in result_files(tmp_path):
        os.utime(path, (HOUR_AGO, HOUR_AGO))      # a run of an hour ago
    stale_temp = os.path.join(os.path.dirname(entry_files(tmp_path)[0]), ".tmp-host-1-2-3")
    with open(stale_temp, "w"):
        pass
    os.utime(stale_temp, (HOUR_AGO, HOUR_AGO))
    os.utime(first._stats.folder, (HOUR_AGO, HOUR_AGO))
    for name in os.listdir(first._stats.folder):
        os.utime(os.path.join(first._stats.folder, name), (HOUR_AGO, HOUR_AGO))

    second = Cache(tmp_path)                      # packs written before it are "old"
    again = Worker(cf.big, cache=second)
    again([0])                                    # read: kept
    again([9])                                    # stored: kept
    removed = second.prune()
    assert removed["entries"] == 2 and removed["results"] == 2 and removed["bytes"] > 8000
    assert not os.path.exists(stale_temp) and not os.path.exists(first._stats.folder)
    assert entry_count(tmp_path) == 2 and len(result_files(tmp_path)) == 2
    again([0]), again([9]), again([1])
    assert hits_misses(second) == (3, 2)

    shutil.rmtree(tmp_path / "uses")              # as if nothing was read since
    assert second.prune()["entries"] == 2 and entry_count(tmp_path) == 1   # [1] is new
    assert second.prune()["entries"] == 1 and entry_count(tmp_path) == 0   # not any more


def test_prune_keeps_the_entries_of_a_batch_that_were_read(tmp_path):
    cache = Cache(tmp_path)
    values, _ = map_stage(Worker(cf.square, cache=cache), None, list(range(10)), True)
    assert values == [i * i for i in range(10)]
    [segment] = entry_files(tmp_path)
    assert [p.count for _, _, p in parse_segment(read(segment))] == [10]   # one pack
    later = Cache(tmp_path)
    worker = Worker(cf.square, cache=later)
    assert [worker([i]) for i in (2, 5)] == [4, 25]
    assert later.prune()["entries"] == 8 and entry_count(tmp_path) == 2
    check = Cache(tmp_path)
    assert [Worker(cf.square, cache=check)([i]) for i in (2, 5, 7)] == [4, 25, 49]
    assert hits_misses(check) == (2, 1)
    assert check.prune()["entries"] == 0            # read or stored since check was made
    assert Cache(tmp_path).prune()["entries"] == 3  # but not since this one was


def test_clear_removes_all_entries_and_keeps_counting(tmp_path):
    cache = Cache(tmp_path)
    worker = Worker(cf.big, cache=cache)
    worker([1]), worker([2])
    cache.clear()
    assert entry_files(tmp_path) == [] and result_files(tmp_path) == []
    worker([1])
    assert hits_misses(cache) == (0, 3) and entry_count(tmp_path) == 1


def test_stats_reset_returns_the_counts_before(tmp_path, worker_type):
    cache = Cache(tmp_path)
    worker = Worker(cf.square, cache=cache)
    reset_done = threading.Event()

    def after_the_reset():
        reset_done.wait(60)
        yield from ([i] for i in range(12))
    with IMap(worker_type=worker_type, worker_num=2) as pool:
        first = pool.add_task(worker, ([i] for i in range(10)))
        second = pool.add_task(worker, after_the_reset())
        pool.start()
        assert len(list(first)) == 10
        before = cache.stats(reset=True)
        assert hits_misses(cache) == (0, 0)
        reset_done.set()
        assert (before["hits"], before["misses"]) == (0, 10)
        assert len(list(second)) == 12  # the same workers, whose files were counted before
    assert hits_misses(cache) == (10, 2)


def test_views_and_copies_share_the_statistics(tmp_path):
    cache = Cache(tmp_path)
    view = cache(code=False)
    assert view is not cache and view.root == cache.root and not view.code
    Worker(cf.square, cache=view)([2])
    pickle.loads(pickle.dumps(cache))(cf.plain_double)(2)
    assert hits_misses(cache) == (0, 2) and hits_misses(Cache(tmp_path)) == (0, 0)


def test_options_are_checked(tmp_path):
    with pytest.raises(TypeError, match="code"):
        Cache(tmp_path, code="yes")
    with pytest.raises(TypeError, match="ignore"):
        Cache(tmp_path, ignore=(1,))
    with pytest.raises(TypeError, match="key"):
        Cache(tmp_path, key="id")
    assert Cache(tmp_path, ignore="verbose").ignore == ("verbose",)
    with pytest.raises(TypeError, match="decorates a callable"):
        Cache(tmp_path)(3)


def test_a_root_that_is_a_file_is_an_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a folder")
    with pytest.raises((NotADirectoryError, FileExistsError)):
        Cache(path)
