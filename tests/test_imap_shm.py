"""The shared-memory transport of process pools: large payloads, clean-up, options."""
import os
import signal

import pytest

from imap import IMap, WorkerDiedError
from imap.backends import _shm

MIB = 1 << 20


def imap_segments():
    return {entry for entry in os.listdir("/dev/shm") if entry.startswith("imap_")}


def describe(item):
    return type(item).__name__, len(item), bytes(item[:3]), bytes(item[-3:])


def echo(item):
    return item


def test_large_payloads_of_every_kind_round_trip():
    payloads = [b"a" * (2 * MIB), bytearray(b"b" * (3 * MIB)), memoryview(b"c" * (2 * MIB)),
                [b"d" * (2 * MIB), b"small"], (bytearray(b"e" * MIB), 7)]
    before = imap_segments()
    with IMap(echo, payloads, worker_num=2) as pool:
        results = list(pool)
    assert [type(r) for r in results] == [bytes, bytearray, memoryview, list, tuple]
    assert results[0] == payloads[0] and results[1] == payloads[1]
    assert bytes(results[2]) == bytes(payloads[2])
    assert results[3] == payloads[3] and results[4] == payloads[4]
    assert imap_segments() == before


def test_payloads_actually_travel_through_shared_memory(monkeypatch):
    with IMap(describe, [b"x" * (2 * MIB)] * 3, worker_num=1) as pool:
        assert list(pool) == [("bytes", 2 * MIB, b"xxx", b"xxx")] * 3
    writer = _shm.Writer(_shm.pool_prefix(), MIB)
    try:
        data, descriptor = writer.dumps([b"y" * (2 * MIB)])
        assert descriptor is not None and len(data) < 1000
        data, descriptor = writer.dumps([b"y" * 100])
        assert descriptor is None
    finally:
        writer.close()


def test_threshold_option():
    assert IMap(worker_num=1).shm_threshold == _shm.DEFAULT_THRESHOLD
    assert IMap(worker_num=1, shm_threshold=0).shm_threshold == 0
    with pytest.raises(ValueError, match="shm_threshold must be >= 0"):
        IMap(worker_num=1, shm_threshold=-1)
    with IMap(describe, [b"z" * (2 * MIB)], worker_num=1, shm_threshold=0) as pool:
        assert list(pool) == [("bytes", 2 * MIB, b"zzz", b"zzz")]


def kill_on_second(item):
    if item[:1] == b"k":
        os.kill(os.getpid(), signal.SIGKILL)
    return len(item)


def test_a_worker_killed_mid_transfer_leaves_no_segment():
    before = imap_segments()
    payloads = [b"a" * (2 * MIB), b"k" * (2 * MIB), b"c" * (3 * MIB)]
    with IMap(kill_on_second, payloads, worker_num=1) as pool:
        assert pool.next() == 2 * MIB
        with pytest.raises(WorkerDiedError, match="SIGKILL"):
            pool.next()
        assert pool.next() == 3 * MIB
    assert imap_segments() == before


def test_numpy_arrays_when_numpy_is_installed():
    numpy = pytest.importorskip("numpy")
    array = numpy.arange(MIB, dtype=numpy.float64)
    with IMap(echo, [array, array * 2], worker_num=1) as pool:
        first, second = list(pool)
    assert (first == array).all() and (second == array * 2).all()
