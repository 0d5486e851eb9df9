"""The counters of one Cache object, summed over every process, thread and host using it.

    root/stats/<cache id>/
      <host>-<pid>-<token>.counts   one per process that used the cache (or a copy of it):
                                    its running totals, one fixed-size record rewritten
                                    in place after every event (the file is mapped in
                                    memory: an update costs no system call)
      baseline                      the totals per file at the last stats(reset=True)
      epoch                         touched when the Cache was made and at each prune():
                                    its mtime is the file-system time prune() compares with
      warned-<tag>                  made (O_EXCL) by the first process that warns about tag

Why files and no manager process: a copy of the Cache travels to threads, processes and
remote hosts that share the directory, and nothing else is shared by all of them. Each
process writes only its own file (no lock across processes, no append races on NFS); the
counts of a process are in its file (the kernel's page cache) as soon as the event
happened, so a worker killed by SIGKILL loses none (another host sharing the directory over
NFS sees them when the kernel writes the page back, at the latest when that process
ends); ``stats()`` reads and sums the files, minus the baseline. The token
keeps a recycled pid from overwriting a dead process's totals. Threads of one process
share its record under a lock.

A record: b"PAPYSTAT" | one uint64 per field of FIELDS | crc32 of the bytes before; a
reader that sees a torn record (a write under way) reads again.
"""
from __future__ import annotations

import errno
import json
import mmap
import logging
import os
import shutil
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Iterable

from ._cache_files import HOST, write_atomic

__all__ = ["FIELDS", "StatsFolder"]

log = logging.getLogger(__name__)

FIELDS = ("hits", "misses", "bytes", "errors", "uncacheable", "write_errors")
_INDEX = {field: k for k, field in enumerate(FIELDS)}
_RECORD = struct.Struct(f"<8s{len(FIELDS)}QI")
_BODY = struct.Struct(f"<8s{len(FIELDS)}Q")
_CRC = struct.Struct("<I")
_MAGIC = b"PAPYSTAT"
_SUFFIX = ".counts"
_OPEN_LIMIT = 32            # counter files kept mapped per process (the others map again)


class _ProcessCounter:
    """This process's totals for one cache, and the file that holds them (mapped in
    memory: an update is a write to memory that the kernel keeps, SIGKILL or not)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.name = f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}{_SUFFIX}"
        self.values = [0] * len(FIELDS)
        self.lock = threading.Lock()
        self.map: mmap.mmap | None = None
        self.broken = False         # the file cannot be written: counts kept in memory

    def add(self, index: int, amount: int) -> None:
        self.add_many(((index, amount),))

    def add_many(self, amounts: Iterable[tuple[int, int]]) -> None:
        """Add ``(field index, amount)`` pairs; one update of the record."""
        with self.lock:
            for index, amount in amounts:
                self.values[index] += amount
            self._write()

    def _write(self) -> None:
        """(Holding the lock.)"""
        if self.broken:
            return
        body = _BODY.pack(_MAGIC, *self.values)
        record = body + _CRC.pack(zlib.crc32(body))
        try:
            if self.map is None:
                self.map = _map_counter(self.folder, self.name, record)
                _opened(self)
            else:
                self.map[:] = record
        except (OSError, ValueError) as exc:
            self.broken = True
            log.debug("cache counters %s cannot be written (%s): kept in this process",
                      self.folder, exc)

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None


def _map_counter(folder: str, name: str, record: bytes) -> mmap.mmap:
    """The counter file, its first record written (its block allocated: a full disk is
    an OSError now, never a SIGBUS later), mapped in memory."""
    path = os.path.join(folder, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.pwrite(fd, record, 0) != len(record):
            raise OSError(errno.ENOSPC, "short write")
        return mmap.mmap(fd, len(record))
    finally:
        os.close(fd)


_registry_lock = threading.Lock()
_counters: dict[str, _ProcessCounter] = {}
_open: OrderedDict[int, _ProcessCounter] = OrderedDict()     # id -> mapped counter


def _opened(counter: _ProcessCounter) -> None:
    """Keep at most _OPEN_LIMIT counter files open (called holding counter.lock)."""
    with _registry_lock:
        _open[id(counter)] = counter
        _open.move_to_end(id(counter))
        victims = []
        while len(_open) > _OPEN_LIMIT:
            victims.append(_open.popitem(last=False)[1])
    for victim in victims:
        # never wait for a victim's lock (its owner may be waiting for ours): one that
        # is busy just stays mapped (a mapping more, not a wrong count)
        if victim is not counter and victim.lock.acquire(blocking=False):
            try:
                victim.close()
            finally:
                victim.lock.release()


def _counter(folder: str) -> _ProcessCounter:
    with _registry_lock:
        counter = _counters.get(folder)
        if counter is None:
            counter = _counters[folder] = _ProcessCounter(folder)
        return counter


_generation = [0]           # bumped in a forked child: StatsFolder's cached counter is stale


def _forget_after_fork() -> None:
    """A forked child starts its own counters (it must not write its parent's file)."""
    global _registry_lock, _counters, _open
    _registry_lock, _counters, _open = threading.Lock(), {}, OrderedDict()
    _generation[0] += 1


os.register_at_fork(after_in_child=_forget_after_fork)


class StatsFolder:
    """``root/stats/<cache_id>``: counting, summing, resetting, the epoch, warn-once."""

    def __init__(self, root: str, cache_id: str):
        self.stats_root = os.path.join(root, "stats")
        self.folder = os.path.join(self.stats_root, cache_id)
        self._mine: tuple[int, _ProcessCounter] | None = None

    def _counter(self) -> _ProcessCounter:
        mine = self._mine
        if mine is None or mine[0] != _generation[0]:
            mine = self._mine = (_generation[0], _counter(self.folder))
        return mine[1]

    def count(self, field: str, amount: int = 1) -> None:
        self._counter().add_many(((_INDEX[field], amount),))

    def count_many(self, amounts: dict[str, int]) -> None:
        """Several fields at once (one write); zero amounts are left out."""
        pairs = [(_INDEX[field], amount) for field, amount in amounts.items() if amount]
        if pairs:
            self._counter().add_many(pairs)

    def per_file(self) -> dict[str, list[int]]:
        """Every process's totals, by counter file name."""
        found: dict[str, list[int]] = {}
        try:
            names = [n for n in os.listdir(self.folder) if n.endswith(_SUFFIX)]
        except OSError:
            names = []
        for name in names:
            values = _read_record(os.path.join(self.folder, name))
            if values is not None:
                found[name] = values
        with _registry_lock:
            mine = _counters.get(self.folder)
        if mine is not None:
            with mine.lock:
                found[mine.name] = list(mine.values)    # what this process knows is exact
        return found

    def totals(self) -> dict[str, int]:
        return _subtract(self.per_file(), self._baseline())

    def reset(self) -> dict[str, int]:
        """The totals, and from now on count from zero."""
        current = self.per_file()
        before = _subtract(current, self._baseline())
        try:
            write_atomic(os.path.join(self.folder, "baseline"),
                         json.dumps(current, sort_keys=True).encode())
        except OSError as exc:
            log.warning("papy cache: cannot reset the statistics in %s: %s", self.folder, exc)
        return before

    def _baseline(self) -> dict[str, list[int]]:
        try:
            with open(os.path.join(self.folder, "baseline"), "rb") as handle:
                loaded = json.loads(handle.read())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def touch_epoch(self) -> int:
        """Touch the epoch file now: the later of its mtime (the file system's clock,
        which files are compared with) and this process's clock (which packs and uses
        records are stamped with: papy._cache_packs), in ns. OSError."""
        path = os.path.join(self.folder, "epoch")
        os.makedirs(self.folder, exist_ok=True)
        with open(path, "ab"):
            pass
        os.utime(path)
        return max(os.stat(path).st_mtime_ns, time.time_ns())

    def warn_once(self, tag: str) -> bool:
        """True for the first caller of all processes (and whenever that cannot be told)."""
        try:
            os.makedirs(self.folder, exist_ok=True)
            os.close(os.open(os.path.join(self.folder, f"warned-{tag}"),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return False
        except OSError:
            return True
        return True

    def remove_stale(self, unused_before_ns: int) -> int:
        """Remove the folders of other Cache objects whose files were all last written
        before ``unused_before_ns``; how many."""
        removed = 0
        try:
            folders = [e for e in os.scandir(self.stats_root)
                       if e.is_dir(follow_symlinks=False) and e.path != self.folder]
        except OSError:
            return 0
        for folder in folders:
            try:
                newest = max((e.stat().st_mtime_ns for e in os.scandir(folder.path)),
                             default=0)
            except OSError:
                continue
            if newest < unused_before_ns:
                shutil.rmtree(folder.path, ignore_errors=True)
                removed += 1
        return removed


def _read_record(path: str) -> list[int] | None:
    for _ in range(5):          # a torn read (a write under way): read again
        try:
            with open(path, "rb") as handle:
                data = handle.read(_RECORD.size)
        except OSError:
            return None
        if len(data) != _RECORD.size:
            continue
        magic, *values, check = _RECORD.unpack(data)
        if magic == _MAGIC and zlib.crc32(data[:-4]) == check:
            return values
    return None


def _subtract(current: dict[str, list[int]], baseline: dict[str, list[int]]
              ) -> dict[str, int]:
    totals = dict.fromkeys(FIELDS, 0)
    for name, values in current.items():
        base = baseline.get(name) or [0] * len(FIELDS)
        for field, value, before in zip(FIELDS, values, base, strict=False):
            totals[field] += value - before
    return totals
