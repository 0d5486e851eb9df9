"""This process's index of a prefix's packs (papy._cache_packs: the segment files and the
pack format), and the indexes a process keeps.

Who writes and who reads:

    WorkerCache.call_batch (any thread, process or host) --append--> one pack per batch
        of results it computed (per item in an IMap's tracked mode), to this process's
        segment of the prefix, before those results leave the worker: a SIGKILL loses
        only unfinished batches (a pack cut short by a kill or a full disk is skipped)
    PrefixIndex (one per prefix per process) --reads--> every segment: key -> location
        (pack number, position); loaded on first use; ``refresh`` reads what was appended
        since (one listdir and one stat per segment) when a lookup misses and the index is
        stale: a new call object was made for it (a new run here, a copy of the Worker
        that arrived in a worker process); a decorated function's index also every
        REFRESH_SECONDS

A pack that gives no entries (truncated, corrupt, of another format) is a miss for its
keys: they are computed again and stored in a new pack that takes their place in the
index. Threads of a process share its indexes: lookups read the dict (atomic under the
GIL), loading, refreshing and appending hold the index's lock. ``index_of`` keeps at most
INDEXES per process; ``forget_indexes`` drops them (prune, clear); a forked child starts
with none.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any

from ._cache_files import write_all
from ._cache_packs import Pack, new_segment_name, parse_segment, segment_files
from ._keys import Key

__all__ = ["POSITION_BITS", "MAX_PER_PACK", "GENERATION", "PrefixIndex", "index_of",
           "forget_indexes"]

log = logging.getLogger(__name__)

REFRESH_SECONDS = 0.5
POSITION_BITS = 20
MAX_PER_PACK = 1 << POSITION_BITS
INDEX_AT_ONCE = 16          # a pack of this many entries at most is indexed as it is written
DECODED = 8                 # packs kept decoded per index (hits in a row read the same)
INDEXES = 64                # indexes kept per process
_OPEN_LIMIT = 16                # segment files kept open per index, for reading


class _Segment:
    __slots__ = ("name", "parsed")

    def __init__(self, name: str):
        self.name = name
        self.parsed = 0                     # bytes indexed so far (whole packs)


class PrefixIndex:
    """This process's index of the segments of one prefix (module docstring).

    ``entries``: key -> location, ``pack number << POSITION_BITS | position`` (a small
    int); ``packs[pack number]``: (segment number, offset, length) of a pack.

    What this process appends in a batch of many entries (a run) is not indexed at once:
    inserting into a large dict costs as much as the rest of a cached first run. It is
    read back from the segment at the next refresh (the index is stale whenever a new run
    or a copy of a cached Worker uses it): a run's duplicates are computed again, a later
    run finds everything. A pack of a few entries (one call, one item) is indexed at once.
    """

    def __init__(self, folder: str, prefix: bytes):
        self.folder, self.prefix = folder, prefix
        self.lock = threading.Lock()
        self.entries: dict[Key, int] = {}
        self.packs: list[tuple[int, int, int]] = []
        self.segments: list[_Segment] = []
        self.by_name: dict[str, int] = {}
        self.loaded = False
        self.stale = False                  # read the segments again at the next miss
        self.known = False                  # entries were known at the last (re)load
        self.refreshed = 0.0
        self.own: int | None = None         # this process's segment (its number)
        self.own_fd: int | None = None
        self.readers: OrderedDict[int, int] = OrderedDict()     # segment -> open fd
        self.decoded: OrderedDict[int, list[Any]] = OrderedDict()   # pack -> its values

    # -- looking up --------------------------------------------------------------------
    def find(self, keys: list[Key]) -> list[int | None]:
        """The location of each key (None: not known here); the segments are read again
        when a key is not known and the index is stale."""
        if not self.loaded:
            self.load()
        if not self.entries and not self.stale:
            return [None] * len(keys)       # a first run: nothing to look up
        found = list(map(self.entries.get, keys))
        if None in found and self.refresh():
            again = self.entries.get
            found = [again(key) if at is None else at for key, at in zip(keys, found, strict=True)]
        return found

    def empty(self) -> bool:
        """Nothing was known when the index was last loaded or refreshed (at the start
        of this use: a first run), and it is not stale: every key of a batch is a miss,
        without a lookup. The small packs this process indexed as it wrote them since
        (items of a tracked batch) do not count: like its batches, they are duplicates of
        this run, found by the next."""
        if not self.loaded:
            self.load()
        if self.stale:
            self.refresh()
        return not self.known

    def find_one(self, key: Key, timed: bool = False) -> int | None:
        """``find([key])[0]``, for one item; ``timed``: read the segments again when
        REFRESH_SECONDS passed since the last time, stale or not (a decorated function:
        nothing else tells it that other processes stored more)."""
        if not self.loaded:
            self.load()
        location = self.entries.get(key)
        if location is None and self.refresh(timed):
            location = self.entries.get(key)
        return location

    def load(self) -> None:
        """Read every segment, once (the first lookup; other threads wait for it)."""
        with self.lock:
            if not self.loaded:
                self._read_new()
                self.loaded = True

    def refresh(self, timed: bool = False) -> bool:
        """Read what the segments hold past what was read (other processes' packs, and
        this process's packs that were not indexed) if the index is stale; True when the
        index was read again (here, or by another thread meanwhile): look again."""
        if not self._due(timed):
            return False
        with self.lock:
            if self._due(timed):    # (else another thread read them while this one waited)
                self._read_new()
        return True

    def _due(self, timed: bool) -> bool:
        return self.stale or (timed and time.monotonic() - self.refreshed >= REFRESH_SECONDS)

    def _read_new(self) -> bool:
        """(Holding the lock.) Stale until the end: a lookup meanwhile waits for it."""
        try:
            return self._read_segments()
        finally:
            self.stale, self.refreshed = False, time.monotonic()
            self.known = bool(self.entries)

    def _read_segments(self) -> bool:
        found = False
        for name in segment_files(self.folder):
            number = self.by_name.get(name)
            if number is None:
                number = self._register(name)
            segment = self.segments[number]
            path = os.path.join(self.folder, name)
            try:
                if os.stat(path).st_size <= segment.parsed:
                    continue
                with open(path, "rb") as handle:
                    handle.seek(segment.parsed)
                    data = handle.read()
            except OSError as exc:
                log.debug("cache segment %s unreadable: %s", path, exc)
                continue
            found = self._parse(number, segment, data) or found
        return found

    def _register(self, name: str) -> int:
        number = len(self.segments)
        self.segments.append(_Segment(name))
        self.by_name[name] = number
        return number

    def _parse(self, number: int, segment: _Segment, data: bytes) -> bool:
        base, found = segment.parsed, False
        for offset, length, pack in parse_segment(data):
            segment.parsed = base + offset + length
            if pack is None:
                continue
            try:
                keys = pack.keys()
            except Exception as exc:  # noqa: BLE001 - a damaged pack gives no entries
                log.debug("cache pack skipped in %s: %r", segment.name, exc)
                continue
            self._add(number, base + offset, length, keys)
            found = True
        return found

    def _add(self, number: int, offset: int, length: int, keys: list[Key]) -> None:
        base = len(self.packs) << POSITION_BITS
        self.packs.append((number, offset, length))
        self.entries.update(zip(keys, range(base, base + len(keys)), strict=True))

    # -- reading -----------------------------------------------------------------------
    def values_of(self, pack: int) -> list[Any]:
        """The values of pack number ``pack`` (OSError, ValueError, whatever unpickling
        raises). The last DECODED packs are kept decoded: the caller copies what is not
        immutable before it gives it away."""
        values = self.decoded.get(pack)
        if values is not None:
            return values
        number, offset, length = self.packs[pack]
        values = Pack(os.pread(self._reader(number), length, offset)).values()
        with self.lock:
            self.decoded[pack] = values
            while len(self.decoded) > DECODED:
                self.decoded.popitem(last=False)
        return values

    def _reader(self, number: int) -> int:
        with self.lock:
            fd = self.readers.get(number)
            if fd is not None:
                self.readers.move_to_end(number)
                return fd
            fd = os.open(os.path.join(self.folder, self.segments[number].name), os.O_RDONLY)
            self.readers[number] = fd
            while len(self.readers) > _OPEN_LIMIT:
                os.close(self.readers.popitem(last=False)[1])
            return fd

    def forget(self, key: Key, location: int) -> None:
        """An entry that could not be read: gone from the index (unless replaced)."""
        if self.entries.get(key) == location:
            self.entries.pop(key, None)
        self.decoded.pop(location >> POSITION_BITS, None)

    # -- writing -----------------------------------------------------------------------
    def append(self, data: bytes, keys: list[Key]) -> None:
        """Append a pack to this process's segment (indexed now if it holds at most
        INDEX_AT_ONCE entries). Raises OSError (a full disk: the segment is given up, a
        new one is started next time)."""
        with self.lock:
            if self.own is None or self.own_fd is None:
                self._open_own()
            assert self.own is not None and self.own_fd is not None
            segment = self.segments[self.own]
            try:
                # at the end of the file, wherever it is (one write: a pack is whole)
                offset = os.lseek(self.own_fd, 0, os.SEEK_END)
                write_all(self.own_fd, data)
            except OSError:
                os.close(self.own_fd)
                self.own, self.own_fd = None, None
                raise
            if len(keys) <= INDEX_AT_ONCE:
                self._add(self.own, offset, len(data), keys)
                if segment.parsed == offset:
                    segment.parsed = offset + len(data)

    def _open_own(self) -> None:
        name = new_segment_name()
        path = os.path.join(self.folder, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(path, flags, 0o644)
        self.own, self.own_fd = self._register(name), fd

    def close(self) -> None:
        with self.lock:
            for fd in self.readers.values():
                os.close(fd)
            self.readers.clear()
            if self.own_fd is not None:
                os.close(self.own_fd)
            self.own, self.own_fd = None, None


# -- the indexes of this process -----------------------------------------------------------
_registry_lock = threading.Lock()
_indexes: dict[tuple[str, bytes], PrefixIndex] = {}


def index_of(packs: str, prefix: bytes) -> PrefixIndex:
    """This process's index of ``prefix`` in the packs folder ``packs`` (a long-lived
    process, a remote server, keeps at most INDEXES: the oldest are closed and dropped, and
    read again if they are used again)."""
    index = _indexes.get((packs, prefix))
    if index is None:
        dropped: list[PrefixIndex] = []
        with _registry_lock:
            index = _indexes.get((packs, prefix))
            if index is None:
                index = PrefixIndex(os.path.join(packs, prefix.hex()), prefix)
                _indexes[(packs, prefix)] = index
                dropped = [_indexes.pop(key) for key in list(_indexes)[:-INDEXES]]
                if dropped:
                    GENERATION[0] += 1
        for old in dropped:
            old.close()
    return index


#: bumped whenever indexes are dropped: an index kept by a caller is then looked up again
GENERATION = [0]


def forget_indexes(packs: str) -> None:
    """Drop this process's indexes of ``packs`` (prune or clear changed it)."""
    GENERATION[0] += 1
    with _registry_lock:
        dropped = [key for key in _indexes if key[0] == packs]
        indexes = [_indexes.pop(key) for key in dropped]
    for index in indexes:
        index.close()


def _forget_after_fork() -> None:
    """A forked child starts with no index: it must not append to its parent's segment
    (nor wait for a lock another thread of the parent held); it reads the segments again
    when it needs them."""
    global _registry_lock, _indexes
    _registry_lock, _indexes = threading.Lock(), {}
    GENERATION[0] += 1


os.register_at_fork(after_in_child=_forget_after_fork)
