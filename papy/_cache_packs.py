"""Packs: a cache's entries written one file per batch, and each process's index of them.

    root/packs/<prefix>/<N // 1000, 6 digits>/<N, 12 digits>
        prefix  the key part of a function and its arguments (40 hex digits)
        N       the pack's number, 0, 1, 2, ... for its prefix: a writer claims it with a
                hard link of its finished temporary file (atomic and exclusive, NFS
                included), so a pack appears whole, under a number nobody else has

A pack (binary; every integer little-endian)::

    header  b"PAPYPACK" | format u8 | 0 u8 | 0 u16 | count u32 | keys u32 | refs u32
            | values u64
    keys    pickle: the list of ``count`` keys (str or bytes: papy._keys.inbox_key)
    refs    20 bytes per result file the values point at (read by prune)
    check   blake2b-16 of header, keys and refs
    values  pickle: the list of ``count`` results (a result stored in its own file:
            ``Stored(digest, size)``)
    check   blake2b-16 of values

Who writes and who reads:

    WorkerCache.call_batch (any thread, process or host) --publish--> a new pack per batch
        of results it computed, before those results leave the worker (SIGKILL loses only
        the batches that had not finished); a pack is never rewritten (prune writes new
        ones and removes the old)
    PrefixIndex (one per prefix per process) --reads--> every pack once: key -> location
        (pack number << SHIFT | position); loaded on first use, brought up to date by
        ``refresh`` when a lookup misses (the packs numbered after the last one read:
        probing N + 1, N + 2, ... costs one failed open when nothing is new)

A pack that cannot be read, is truncated, corrupt or of another format gives no entries (a
miss for its keys, which are computed again and stored in a new pack that takes their
place in every index). Threads of a process share its indexes: lookups read the dict
(atomic), loading and publishing hold the index's lock.
"""
from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import pickle
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["PACK_FORMAT", "SHIFT", "PrefixIndex", "Stored", "encode_pack", "read_pack",
           "pack_files", "index_of", "forget_indexes"]

log = logging.getLogger(__name__)

PACK_FORMAT = 1
MAGIC = b"PAPYPACK"
SHIFT = 20                          # location = number << SHIFT | position
MAX_PER_PACK = 1 << SHIFT
_HEADER = struct.Struct("<8sBBHIIIQ")
_CHECK = 16
_DIGEST = 20
_PER_FOLDER = 1000
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS,
                       errno.EXDEV, errno.EMLINK})
_HOST = socket.gethostname().replace("/", "_") or "host"
_temp_counter = itertools.count()


class Stored:
    """In a pack's values: a result kept in its own file, named by its content digest."""

    __slots__ = ("digest", "size")

    def __init__(self, digest: bytes, size: int):
        self.digest, self.size = digest, size

    def __reduce__(self) -> tuple[Any, ...]:
        return (Stored, (self.digest, self.size))


def _check(*parts: bytes) -> bytes:
    digest = hashlib.blake2b(digest_size=_CHECK)
    for part in parts:
        digest.update(part)
    return digest.digest()


def encode_pack(keys: list[str | bytes], values: bytes, refs: list[bytes]) -> bytes:
    """The bytes of a pack (module docstring): ``values`` is the pickled list of results."""
    keys_blob = pickle.dumps(keys, protocol=pickle.HIGHEST_PROTOCOL)
    refs_blob = b"".join(refs)
    header = _HEADER.pack(MAGIC, PACK_FORMAT, 0, 0, len(keys), len(keys_blob),
                          len(refs_blob), len(values))
    return b"".join((header, keys_blob, refs_blob, _check(header, keys_blob, refs_blob),
                     values, _check(values)))


class Pack:
    """A pack read from its file: its keys and refs checked; its values on demand."""

    __slots__ = ("data", "count", "keys_end", "refs_end", "values_start")

    def __init__(self, data: bytes):
        if len(data) < _HEADER.size + 2 * _CHECK:
            raise ValueError("too short")
        magic, version, _, _, count, keys, refs, values = _HEADER.unpack_from(data)
        if magic != MAGIC or version != PACK_FORMAT:
            raise ValueError("another format")
        self.keys_end = _HEADER.size + keys
        self.refs_end = self.keys_end + refs
        self.values_start = self.refs_end + _CHECK
        if len(data) != self.values_start + values + _CHECK or refs % _DIGEST:
            raise ValueError("truncated")
        if _check(data[:self.refs_end]) != data[self.refs_end:self.values_start]:
            raise ValueError("corrupt")
        self.data, self.count = data, count

    def keys(self) -> list[str | bytes]:
        keys = pickle.loads(self.data[_HEADER.size:self.keys_end])
        if type(keys) is not list or len(keys) != self.count:
            raise ValueError("keys do not match the header")
        return keys

    def refs(self) -> list[bytes]:
        blob = self.data[self.keys_end:self.refs_end]
        return [blob[k:k + _DIGEST] for k in range(0, len(blob), _DIGEST)]

    def values(self) -> list[Any]:
        """The results (ValueError when the values are corrupt; unpickling may raise
        anything: classes missing here, another version's objects)."""
        blob = self.data[self.values_start:-_CHECK]
        if _check(blob) != self.data[-_CHECK:]:
            raise ValueError("corrupt values")
        values = pickle.loads(blob)
        if type(values) is not list or len(values) != self.count:
            raise ValueError("values do not match the header")
        return values


def read_pack(path: str) -> Pack:
    """The pack in ``path``: OSError when it cannot be read, ValueError when it is not a
    whole pack of this format."""
    with open(path, "rb") as handle:
        data = handle.read()
    return Pack(data)


def pack_path(folder: str, number: int) -> str:
    return os.path.join(folder, f"{number // _PER_FOLDER:06d}", f"{number:012d}")


def pack_files(folder: str) -> Iterator[tuple[int | None, str]]:
    """``(number, path)`` of every file below a prefix folder, in order of number; a
    temporary file (a write under way, or left by a killed writer) has number None."""
    try:
        fans = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    except OSError:
        fans = []
    try:
        loose = [entry.path for entry in os.scandir(folder) if entry.is_file()]
    except OSError:
        loose = []
    for path in loose:
        yield None, path
    for fan in fans:
        try:
            names = sorted(os.listdir(os.path.join(folder, fan)))
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, fan, name)
            yield (int(name) if name.isdigit() else None), path


class PrefixIndex:
    """This process's index of the packs of one prefix (module docstring)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.lock = threading.Lock()
        self.entries: dict[str | bytes, int] = {}
        self.loaded = False
        self.read_upto = -1             # every pack numbered up to this one was read
        self.own: set[int] = set()      # packs written here, numbered above read_upto
        self.next_free = 0              # where this process tries to publish next

    def find(self, keys: list[str | bytes]) -> list[int | None]:
        """The location of each key (None: not known here)."""
        if not self.loaded:
            self.load()
        return list(map(self.entries.get, keys))

    def load(self) -> None:
        """Read every pack of the folder (once, on first use)."""
        with self.lock:
            if self.loaded:
                return
            highest = -1
            for number, path in pack_files(self.folder):
                if number is None:
                    continue
                self._read(number, path)
                highest = max(highest, number)
            self.read_upto = highest
            self.next_free = max(self.next_free, highest + 1)
            self.loaded = True

    def refresh(self) -> bool:
        """Read the packs published since the last one read; True when there were any."""
        if not self.loaded:
            self.load()
            return True
        with self.lock:
            number = self.read_upto + 1
            found = False
            while True:
                if number in self.own:
                    self.own.discard(number)
                    number += 1
                    continue
                path = pack_path(self.folder, number)
                if not os.path.exists(path):
                    break
                self._read(number, path)
                found = True
                number += 1
            self.read_upto = number - 1
            self.next_free = max(self.next_free, number)
            return found

    def _read(self, number: int, path: str) -> None:
        try:
            keys = read_pack(path).keys()
        except FileNotFoundError:
            return
        except Exception as exc:  # noqa: BLE001 - a damaged pack gives no entries
            log.debug("cache pack %s skipped: %s", path, exc)
            return
        self._add(number, keys)

    def _add(self, number: int, keys: list[str | bytes]) -> None:
        base = number << SHIFT
        self.entries.update(zip(keys, range(base, base + len(keys))))

    def publish(self, data: bytes) -> int:
        """Write a pack and give it the next free number; its keys are the caller's to
        ``add``. Raises OSError (a full disk, a read-only folder)."""
        temp = os.path.join(self.folder, f".tmp-{_HOST}-{os.getpid()}-"
                                         f"{threading.get_ident()}-{next(_temp_counter)}")
        _write_new(temp, data)
        try:
            with self.lock:
                number = self._claim(temp)
                if number > self.read_upto:
                    self.own.add(number)
                self.next_free = number + 1
            return number
        finally:
            _unlink(temp)

    def add(self, number: int, keys: list[str | bytes]) -> None:
        with self.lock:
            self._add(number, keys)

    def _claim(self, temp: str) -> int:
        number = self.next_free
        while True:
            path = pack_path(self.folder, number)
            try:
                os.link(temp, path)
                return number
            except FileExistsError:
                number += 1
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                if _copy_exclusive(temp, path):
                    return number
                number += 1


def _write_new(path: str, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        _unlink(path)
        raise
    os.close(fd)


def _copy_exclusive(temp: str, path: str) -> bool:
    """A file system without hard links: create ``path`` exclusively and copy the pack in
    (a reader that opens it meanwhile sees a truncated pack: a miss, not an error)."""
    with open(temp, "rb") as handle:
        data = handle.read()
    try:
        _write_new(path, data)
    except FileExistsError:
        return False
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("cannot remove %s: %s", path, exc)


# -- the indexes of this process -----------------------------------------------------------
_registry_lock = threading.Lock()
_indexes: dict[str, PrefixIndex] = {}


def index_of(packs: str, prefix: bytes) -> PrefixIndex:
    """This process's index of ``prefix`` in the packs folder ``packs``."""
    folder = os.path.join(packs, prefix.hex())
    index = _indexes.get(folder)
    if index is None:
        with _registry_lock:
            index = _indexes.setdefault(folder, PrefixIndex(folder))
    return index


def forget_indexes(packs: str) -> None:
    """Drop this process's indexes of ``packs`` (after prune or clear changed it)."""
    with _registry_lock:
        for folder in [f for f in _indexes if os.path.dirname(f) == packs]:
            del _indexes[folder]


def _forget_after_fork() -> None:
    """A forked child starts with no index (a lock held by another thread of the parent
    would never be released in the child); it reads the packs again when it needs them."""
    global _registry_lock, _indexes
    _registry_lock, _indexes = threading.Lock(), {}


os.register_at_fork(after_in_child=_forget_after_fork)
