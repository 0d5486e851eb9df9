"""Packs: a cache's entries, one record per batch, appended to each process's segment file;
and each process's index of them.

    root/packs/<prefix>/<host>-<pid>-<token>.seg
        prefix   the key part of a function and its arguments (40 hex digits)
        segment  written by ONE process (appended, one write per pack), read by all

A pack (binary; every integer little-endian)::

    header  b"PAPYPACK" | format u8 | 0 u8 | 0 u16 | count u32 | keys u32 | refs u32
            | values u64 | time_ns u64 (when it was written)
    keys    the ``count`` keys (int, str or bytes: papy._keys.inbox_key): b"Q" and int64s,
            b"S" and the strs joined by line breaks (the reprs of plain items have none),
            or b"P" and the pickle of the list
    refs    20 bytes per result file the values point at (read by prune)
    check   crc32 of header, keys and refs
    values  pickle: the list of ``count`` results (a result stored in its own file:
            ``Stored(digest, size)``)
    check   crc32 of values

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

A segment is never rewritten in place (prune writes what it keeps to a new segment and
removes the old ones). A pack that is truncated, corrupt or of another format gives no
entries (a miss for its keys, which are computed again and stored in a new pack that
takes their place in the index). Threads of a process share its indexes: lookups read the
dict (atomic under the GIL), loading, refreshing and appending hold the index's lock.
"""
from __future__ import annotations

import array
import itertools
import logging
import os
import pickle
import socket
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from ._keys import Key

__all__ = ["PACK_FORMAT", "PrefixIndex", "Stored", "encode_pack", "parse_segment",
           "segment_files", "index_of", "forget_indexes", "write_atomic", "remove"]

log = logging.getLogger(__name__)

PACK_FORMAT = 1
MAGIC = b"PAPYPACK"
REFRESH_SECONDS = 0.5
SUFFIX = ".seg"
POSITION_BITS = 20
MAX_PER_PACK = 1 << POSITION_BITS
INDEX_AT_ONCE = 16          # a pack of this many entries at most is indexed as it is written
DECODED = 8                 # packs kept decoded per index (hits in a row read the same)
INDEXES = 64                # indexes kept per process
_HEADER = struct.Struct("<8sBBHIIIQQ")
_CHECK = 4
_CRC = struct.Struct("<I")
_DIGEST = 20
_OPEN_LIMIT = 16                # segment files kept open per index, for reading
_HOST = socket.gethostname().replace("/", "_") or "host"
_temp_counter = itertools.count()


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (creating the
    folder if needed). Raises OSError (a full disk: ENOSPC, EDQUOT, EFBIG)."""
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.{_HOST}-{os.getpid()}-{threading.get_ident()}-"
                                f"{next(_temp_counter)}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        remove(temp)
        raise


def write_all(fd: int, data: bytes) -> None:
    """``data`` to ``fd``, however many writes it takes (OSError)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def remove(path: str) -> bool:
    """Remove a file; False when it was not there or could not be removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.debug("cannot remove %s: %s", path, exc)
        return False


class Stored:
    """In a pack's values: a result kept in its own file, named by its content digest."""

    __slots__ = ("digest", "size")

    def __init__(self, digest: bytes, size: int):
        self.digest, self.size = digest, size

    def __reduce__(self) -> tuple[Any, ...]:
        return (Stored, (self.digest, self.size))


def _check(*parts: bytes | memoryview) -> bytes:
    check = 0
    for part in parts:
        check = zlib.crc32(part, check)
    return _CRC.pack(check)


def encode_keys(keys: list[Key], ints: bool = False) -> bytes:
    """b"Q" and an array of int64 when the caller knows the keys are all ints of 64 bits
    (``ints``), b"S" and the keys joined by line breaks when they are all strs without one
    (the reprs of papy._keys: a tenth of the cost of a pickle), else b"P" and their
    pickle."""
    if ints:
        return b"Q" + array.array("q", keys).tobytes()  # type: ignore[type-var]  # all ints
    try:
        text = "\n".join(keys)  # type: ignore[arg-type]  # else TypeError, caught
    except TypeError:           # a bytes key (a digest)
        text = None
    if text is not None and text.count("\n") == len(keys) - 1:
        return b"S" + text.encode("utf-8", "surrogatepass")
    return b"P" + pickle.dumps(keys, protocol=pickle.HIGHEST_PROTOCOL)


def decode_keys(blob: bytes | memoryview, count: int) -> list[Key]:
    kind, body = blob[:1], blob[1:]
    keys: Any
    if kind == b"Q":
        numbers = array.array("q")
        numbers.frombytes(bytes(body))
        keys = numbers.tolist()
    elif kind == b"S":
        keys = bytes(body).decode("utf-8", "surrogatepass").split("\n") if count else []
    elif kind == b"P":
        keys = pickle.loads(body)
    else:
        raise ValueError("keys of an unknown kind")
    if type(keys) is not list or len(keys) != count:
        raise ValueError("keys do not match the header")
    return keys


def encode_pack(keys: list[Key], values: bytes, refs: list[bytes],
                written_ns: int | None = None, ints: bool = False) -> bytes:
    """The bytes of a pack (module docstring): ``values`` is the pickled list of results;
    ``ints``: see encode_keys."""
    keys_blob = encode_keys(keys, ints)
    refs_blob = b"".join(refs)
    header = _HEADER.pack(MAGIC, PACK_FORMAT, 0, 0, len(keys), len(keys_blob),
                          len(refs_blob), len(values),
                          time.time_ns() if written_ns is None else written_ns)
    return b"".join((header, keys_blob, refs_blob, _check(header, keys_blob, refs_blob),
                     values, _check(values)))


class Pack:
    """A pack read from a segment: its keys and refs checked; its values on demand."""

    __slots__ = ("data", "count", "written_ns", "keys_end", "refs_end", "values_start")

    def __init__(self, data: bytes | memoryview):
        magic, version, _, _, count, keys, refs, values, written = \
            _HEADER.unpack_from(data)
        if magic != MAGIC or version != PACK_FORMAT:
            raise ValueError("not a pack of this format")
        self.keys_end = _HEADER.size + keys
        self.refs_end = self.keys_end + refs
        self.values_start = self.refs_end + _CHECK
        if len(data) != self.values_start + values + _CHECK or refs % _DIGEST:
            raise ValueError("truncated")
        if _check(data[:self.refs_end]) != bytes(data[self.refs_end:self.values_start]):
            raise ValueError("corrupt")
        self.data, self.count, self.written_ns = data, count, written

    def keys(self) -> list[Key]:
        return decode_keys(self.data[_HEADER.size:self.keys_end], self.count)

    def refs(self) -> list[bytes]:
        blob = bytes(self.data[self.keys_end:self.refs_end])
        return [blob[k:k + _DIGEST] for k in range(0, len(blob), _DIGEST)]

    def values(self) -> list[Any]:
        """The results (ValueError when the values are corrupt; unpickling may raise
        anything: classes missing here, another version's objects)."""
        blob = self.data[self.values_start:len(self.data) - _CHECK]
        if _check(blob) != bytes(self.data[len(self.data) - _CHECK:]):
            raise ValueError("corrupt values")
        values = pickle.loads(blob)
        if type(values) is not list or len(values) != self.count:
            raise ValueError("values do not match the header")
        return values


def _length_at(data: bytes | memoryview, offset: int) -> int:
    """The length of the pack that starts at ``offset`` by its header (0: none there)."""
    if len(data) - offset < _HEADER.size:
        return 0
    magic, version, _, _, _, keys, refs, values, _ = _HEADER.unpack_from(data, offset)
    if magic != MAGIC or version != PACK_FORMAT:
        return 0
    return int(_HEADER.size + keys + refs + _CHECK + values + _CHECK)


def parse_segment(data: bytes, offset: int = 0) -> Iterator[tuple[int, int, Pack | None]]:
    """``(offset, length, pack)`` of the whole packs of a segment from ``offset``, in order;
    ``pack`` is None for a damaged pack whose length can still be trusted (the next one
    starts right after it). Stops at the end, or at a pack cut short (being written,
    or its writer killed) or damaged beyond that."""
    view = memoryview(data)
    while True:
        length = _length_at(view, offset)
        if not length or offset + length > len(data):
            return
        try:
            pack: Pack | None = Pack(view[offset:offset + length])
        except ValueError:
            end = offset + length
            if end != len(data) and not _length_at(view, end):
                return                      # the length itself may be wrong: stop here
            pack = None
        yield offset, length, pack
        offset += length


def segment_files(folder: str) -> list[str]:
    """The segment file names of a prefix folder (temporary files left out)."""
    try:
        return sorted(name for name in os.listdir(folder) if name.endswith(SUFFIX)
                      and not name.startswith("."))
    except OSError:
        return []


def new_segment_name() -> str:
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"


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
        """Nothing is known here, and the index is not stale (a first run): every key is a
        miss, without a lookup."""
        if not self.loaded:
            self.load()
        if self.stale:
            self.refresh()
        return not self.entries

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
