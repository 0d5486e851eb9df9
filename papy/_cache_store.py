"""The files of a cache directory: packs of entries, result files, the uses log; prune.

    root/
      papy-cache                  marker: what wrote this directory ({"format": N})
      packs/<prefix>/...          the entries, one pack file per batch (papy._cache_packs)
      results/12/3456...          one file per result larger than INLINE_LIMIT, named by
                                  the digest of its pickle: stored once, however many
                                  entries point at it
      uses/<host>-<pid>-<token>   what each process read, for prune: appended records
      stats/<cache id>/...        counters (papy._cache_stats)
      files/...                   file_refs' checksum records (papy._fileref)

Every file appears whole: a result file or a marker is written to a temporary name in its
final folder and renamed (``write_atomic``; two writers leave one of the two, whole); a
pack is linked under its number (papy._cache_packs). A process killed while writing leaves
a temporary file (its name starts with a dot), which readers never open and ``prune`` /
``clear`` remove.

A uses record (appended with one write by the process that read the entries)::

    length u32 | time_ns u64 | prefix (20 bytes) | count u32 | count x location u64 | crc32

``prune(unused_before)`` keeps a pack written since then whole; of an older pack it keeps
the entries some record since then says were read (written again as a new pack, given the
old pack's time), and removes the rest; then the result files no kept pack points at.
"""
from __future__ import annotations

import array
import errno
import hashlib
import itertools
import json
import logging
import os
import pickle
import shutil
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

from ._cache_packs import (SHIFT, PrefixIndex, Stored, encode_pack, forget_indexes, index_of,
                           pack_files, pack_path, read_pack)

__all__ = ["FORMAT", "INLINE_LIMIT", "FULL_DISK", "MISSING", "Saved", "Store", "write_atomic"]

log = logging.getLogger(__name__)

FORMAT = 2
INLINE_LIMIT = 1024
_MARKER = "papy-cache"
_DIGEST = 20
_MASK = (1 << SHIFT) - 1
_USE_HEAD = struct.Struct("<IQ20sI")
_temp_counter = itertools.count()
_HOST = socket.gethostname().replace("/", "_") or "host"
_ENTRY_LIMIT = (1 << SHIFT) - 1

FULL_DISK = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                       errno.EACCES, errno.EPERM})


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: what ``Store.fetch`` gives for an entry it cannot read (compared with ``is``)
MISSING: Any = _Missing()


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
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        _remove(temp)
        raise


def _remove(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.debug("cannot remove %s: %s", path, exc)
        return False


def digest_of(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST).digest()


class Saved:
    """What ``Store.save`` did: result bytes written (a result file already there costs
    none) and the positions whose results could not be pickled ({position: exception})."""

    __slots__ = ("written", "unpicklable")

    def __init__(self, written: int, unpicklable: dict[int, Exception]):
        self.written, self.unpicklable = written, unpicklable


class Store:
    """The packs, results and uses of the cache directory ``root`` (module docstring)."""

    def __init__(self, root: str):
        self.root = root
        self.packs = os.path.join(root, "packs")
        self.results = os.path.join(root, "results")
        self.uses = os.path.join(root, "uses")

    def make(self) -> None:
        """Create the folders and the marker (OSError when the directory is unusable)."""
        for folder in (self.packs, self.results, self.uses):
            os.makedirs(folder, exist_ok=True)
        marker = os.path.join(self.root, _MARKER)
        if not os.path.exists(marker):
            write_atomic(marker, json.dumps({"format": FORMAT, "by": "papy"}).encode())

    def index(self, prefix: bytes) -> PrefixIndex:
        return index_of(self.packs, prefix)

    def result_path(self, digest: bytes) -> str:
        text = digest.hex()
        return os.path.join(self.results, text[:2], text[2:])

    # -- read --------------------------------------------------------------------------
    def find(self, prefix: bytes, keys: list[str | bytes]) -> list[int | None]:
        """The location of each key's entry (None: none); the packs other processes wrote
        meanwhile are read when a key is not known here."""
        index = self.index(prefix)
        found = index.find(keys)
        if None in found and index.refresh():
            again = index.entries.get
            found = [again(key) if at is None else at for key, at in zip(keys, found)]
        return found

    def fetch(self, prefix: bytes, locations: list[int]) -> list[Any]:
        """The results at ``locations`` (MISSING where a pack or result file cannot be
        read here: a miss). Each pack is read and unpickled once per call, so the results
        are new objects, nobody else's."""
        results = [MISSING] * len(locations)
        by_pack: dict[int, list[int]] = {}
        for position, location in enumerate(locations):
            by_pack.setdefault(location >> SHIFT, []).append(position)
        folder = self.index(prefix).folder
        for number, positions in by_pack.items():
            values = self._values(folder, number)
            if values is None:
                continue
            for position in positions:
                value = values[locations[position] & _MASK]
                if type(value) is Stored:
                    value = self._load_result(value)
                results[position] = value
        self._note_uses(prefix, locations)
        return results

    def _values(self, folder: str, number: int) -> list[Any] | None:
        path = pack_path(folder, number)
        try:
            return read_pack(path).values()
        except Exception as exc:  # noqa: BLE001 - unreadable, damaged, another version's
            log.debug("cache pack %s cannot be read here: %r", path, exc)
            return None

    def _load_result(self, stored: Stored) -> Any:
        path = self.result_path(stored.digest)
        try:
            with open(path, "rb") as handle:
                payload = handle.read()
        except OSError:
            return MISSING
        if len(payload) != stored.size or digest_of(payload) != stored.digest:
            log.debug("cache result %s is truncated or corrupt: removed", path)
            _remove(path)
            return MISSING
        try:
            return pickle.loads(payload)
        except Exception as exc:  # noqa: BLE001 - another version's classes
            log.debug("cache result %s cannot be unpickled here: %r", path, exc)
            return MISSING

    # -- write -------------------------------------------------------------------------
    def save(self, prefix: bytes, keys: list[str | bytes], values: list[Any]) -> Saved:
        """Store ``values`` under ``keys`` in one pack (several past MAX_PER_PACK entries);
        raises OSError. A result that cannot be pickled is left out (``Saved``)."""
        written, unpicklable = 0, {}
        for start in range(0, len(keys), _ENTRY_LIMIT):
            part = self._save_part(prefix, keys[start:start + _ENTRY_LIMIT],
                                   values[start:start + _ENTRY_LIMIT])
            written += part.written
            unpicklable.update({start + k: exc for k, exc in part.unpicklable.items()})
        return Saved(written, unpicklable)

    def _save_part(self, prefix: bytes, keys: list[str | bytes], values: list[Any]) -> Saved:
        refs: list[bytes] = []
        unpicklable: dict[int, Exception] = {}
        try:
            blob: bytes | None = pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - found item by item below
            blob = None
        if blob is not None and len(blob) <= INLINE_LIMIT * len(values):
            written = len(blob)
        else:           # large or unpicklable results: item by item
            written, kept_keys, kept = 0, [], []
            for position, (key, value) in enumerate(zip(keys, values)):
                try:
                    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # noqa: BLE001 - whatever pickle refuses
                    unpicklable[position] = exc
                    continue
                if len(payload) > INLINE_LIMIT:
                    stored = self._save_result(payload)
                    written += stored[1]
                    refs.append(stored[0].digest)
                    value = stored[0]
                else:
                    written += len(payload)
                kept_keys.append(key)
                kept.append(value)
            if not kept_keys:
                return Saved(written, unpicklable)
            keys = kept_keys
            blob = pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL)
        index = self.index(prefix)
        number = index.publish(encode_pack(keys, blob, refs))
        index.add(number, keys)
        return Saved(written, unpicklable)

    def _save_result(self, payload: bytes) -> tuple[Stored, int]:
        """The result file of ``payload`` (written unless it is there); bytes written."""
        digest = digest_of(payload)
        path = self.result_path(digest)
        try:
            present = os.stat(path).st_size == len(payload)
        except OSError:
            present = False
        if not present:
            write_atomic(path, payload)
        return Stored(digest, len(payload)), 0 if present else len(payload)

    # -- the uses log (for prune) --------------------------------------------------------
    def _note_uses(self, prefix: bytes, locations: list[int]) -> None:
        body = array.array("Q", locations).tobytes()
        head = _USE_HEAD.pack(_USE_HEAD.size + len(body) + 4, time.time_ns(), prefix,
                              len(locations))
        record = head + body
        _uses_log(self.uses).append(record + struct.pack("<I", zlib.crc32(record)))

    def used_since(self, since_ns: int) -> dict[str, set[int]]:
        """``{prefix hex: locations}`` read since ``since_ns`` by any process."""
        used: dict[str, set[int]] = {}
        for path in _files_in(self.uses):
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            for stamp, prefix, locations in _records(data):
                if stamp >= since_ns:
                    used.setdefault(prefix.hex(), set()).update(locations)
        return used

    # -- maintenance -------------------------------------------------------------------
    def prune(self, unused_before_ns: int, now_ns: int) -> dict[str, int]:
        """Remove the entries neither written nor read since ``unused_before_ns``, then the
        result files no pack points at (written before ``now_ns``: a store under way
        writes its result file before its pack), and leftover temporary files."""
        removed = {"entries": 0, "results": 0, "bytes": 0}
        used = self.used_since(unused_before_ns)
        referenced: set[bytes] = set()
        try:
            prefixes = [e.name for e in os.scandir(self.packs) if e.is_dir()]
        except OSError:
            prefixes = []
        for prefix in prefixes:
            folder = os.path.join(self.packs, prefix)
            for number, path in list(pack_files(folder)):
                referenced.update(self._prune_pack(prefix, folder, number, path,
                                                   unused_before_ns, used, removed))
        for path in _files_in(self.uses):
            if _mtime(path) < unused_before_ns:
                _remove(path)
        for path, stat in _result_files(self.results):
            name = os.path.basename(path)
            if stat.st_mtime_ns >= now_ns:
                continue
            if name.startswith("."):
                _remove(path)
                continue
            try:
                digest = bytes.fromhex(os.path.basename(os.path.dirname(path)) + name)
            except ValueError:
                continue
            if digest not in referenced and _remove(path):
                removed["results"] += 1
                removed["bytes"] += stat.st_size
        forget_indexes(self.packs)
        return removed

    def _prune_pack(self, prefix: str, folder: str, number: int | None, path: str,
                    unused_before_ns: int, used: dict[str, set[int]],
                    removed: dict[str, int]) -> list[bytes]:
        """Prune one pack; the result digests it keeps."""
        stat_ns = _mtime(path)
        if number is None:                  # a temporary file
            if stat_ns < unused_before_ns:
                _remove(path)
            return []
        try:
            pack = read_pack(path)
        except (OSError, ValueError):
            if stat_ns < unused_before_ns:
                _remove(path)               # damaged and old
            return []
        if stat_ns >= unused_before_ns:
            return pack.refs()
        base = number << SHIFT
        positions = sorted(loc - base for loc in used.get(prefix, ())
                           if loc >> SHIFT == number)
        if len(positions) == pack.count:
            return pack.refs()
        removed["entries"] += pack.count - len(positions)
        if not positions:
            _remove(path)
            return []
        try:
            keys, values = pack.keys(), pack.values()
        except Exception:  # noqa: BLE001 - unreadable values: nothing to keep
            _remove(path)
            return []
        kept = [values[p] for p in positions]
        refs = [v.digest for v in kept if type(v) is Stored]
        blob = pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL)
        index = PrefixIndex(folder)
        index.next_free = number + 1
        new = index.publish(encode_pack([keys[p] for p in positions], blob, refs))
        os.utime(pack_path(folder, new), ns=(stat_ns, stat_ns))   # as old as what it holds
        _remove(path)
        return refs

    def clear(self) -> None:
        """Remove every entry, result and use record (the statistics stay)."""
        for folder in (self.packs, self.results, self.uses):
            shutil.rmtree(folder, ignore_errors=True)
        forget_indexes(self.packs)
        try:
            for folder in (self.packs, self.results, self.uses):
                os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            log.debug("cannot recreate %s: %s", self.root, exc)


def _records(data: bytes) -> Iterator[tuple[int, bytes, array.array[int]]]:
    """The whole records of a uses log (a torn last record, a killed writer's, is
    skipped)."""
    offset = 0
    while offset + _USE_HEAD.size <= len(data):
        length, stamp, prefix, count = _USE_HEAD.unpack_from(data, offset)
        end = offset + length
        if length != _USE_HEAD.size + 8 * count + 4 or end > len(data):
            return
        if zlib.crc32(data[offset:end - 4]) != struct.unpack_from("<I", data, end - 4)[0]:
            return
        locations = array.array("Q")
        locations.frombytes(data[offset + _USE_HEAD.size:end - 4])
        yield stamp, prefix, locations
        offset = end


class _UsesLog:
    """This process's uses log in one folder: records appended with one write each."""

    def __init__(self, folder: str):
        self.folder = folder
        self.lock = threading.Lock()
        self.fd: int | None = None
        self.broken = False

    def append(self, record: bytes) -> None:
        with self.lock:
            if self.broken:
                return
            try:
                if self.fd is not None and os.fstat(self.fd).st_nlink == 0:
                    os.close(self.fd)       # removed by a prune or a clear: a new file
                    self.fd = None
                if self.fd is None:
                    self.fd = self._open()
                os.write(self.fd, record)
            except OSError as exc:
                self.broken = True
                log.debug("cache uses log in %s cannot be written (%s): prune() will not "
                          "know what this process read", self.folder, exc)

    def _open(self) -> int:
        path = os.path.join(self.folder, f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        try:
            return os.open(path, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(self.folder, exist_ok=True)
            return os.open(path, flags, 0o644)


_logs_lock = threading.Lock()
_logs: dict[str, _UsesLog] = {}


def _uses_log(folder: str) -> _UsesLog:
    found = _logs.get(folder)
    if found is None:
        with _logs_lock:
            found = _logs.setdefault(folder, _UsesLog(folder))
    return found


def _forget_after_fork() -> None:
    """A forked child writes its own uses log (its own file: records never interleave)."""
    global _logs_lock, _logs
    _logs_lock, _logs = threading.Lock(), {}


os.register_at_fork(after_in_child=_forget_after_fork)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _files_in(folder: str) -> list[str]:
    try:
        return [entry.path for entry in os.scandir(folder) if entry.is_file()]
    except OSError:
        return []


def _result_files(folder: str) -> Iterator[tuple[str, os.stat_result]]:
    """The files one level of fan-out below ``folder``, with their stat."""
    try:
        fans = [entry for entry in os.scandir(folder) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for fan in fans:
        try:
            entries = list(os.scandir(fan.path))
        except OSError:
            continue
        for entry in entries:
            try:
                yield entry.path, entry.stat(follow_symlinks=False)
            except OSError:
                continue
