"""What each process read from a cache (the uses log), and ``prune``.

    Store.fetch (any thread, process, host) --note_uses--> root/uses/<host>-<pid>-<token>:
        one record appended per batch of hits, with one write, by its own process
    Cache.prune() --prune--> reads every uses log, then every segment; writes what it
        keeps, removes the rest

A uses record::

    length u32 | time_ns u64 | prefix (20 bytes) | count u32 | the keys read (as in a
    pack: papy._cache_packs.encode_keys) | crc32

``prune(store, unused_before, now)`` keeps a pack written since ``unused_before`` whole; of
an older pack it keeps the entries some record since then says were read and drops the
rest; a segment that loses entries is written again as a new segment (its packs keep
their times), and the old one removed. Then the result files no kept pack points at, and
the uses logs last written before ``unused_before``. Call it when no run uses the cache: a
process still appending to a segment that prune replaces loses what it appends after
(computed again next time), and its index still points at the old segment (it reads the
old data it holds open, or misses).
"""
from __future__ import annotations

import logging
import os
import pickle
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._cache_files import HOST, remove, write_atomic
from ._cache_packs import Pack, Stored, decode_keys, encode_keys, encode_pack, \
    new_segment_name, parse_segment, segment_files

if TYPE_CHECKING:
    from ._cache_store import Store
    from ._keys import Key

__all__ = ["note_uses", "used_since", "prune"]

log = logging.getLogger(__name__)

_USE_HEAD = struct.Struct("<IQ20sI")


def note_uses(folder: str, prefix: bytes, keys: list[Key]) -> None:
    """Record that this process read ``keys`` of ``prefix`` (now)."""
    body = encode_keys(keys)
    record = _USE_HEAD.pack(_USE_HEAD.size + len(body) + 4, time.time_ns(), prefix,
                            len(keys)) + body
    _uses_log(folder).append(record + struct.pack("<I", zlib.crc32(record)))


def used_since(folder: str, since_ns: int) -> dict[str, set[Key]]:
    """``{prefix hex: keys}`` read since ``since_ns`` by any process."""
    used: dict[str, set[Key]] = {}
    for path in _files_in(folder):
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        for stamp, prefix, keys in _records(data):
            if stamp >= since_ns:
                used.setdefault(prefix.hex(), set()).update(keys)
    return used


def prune(store: Store, unused_before_ns: int, now_ns: int) -> dict[str, int]:
    """Remove the entries neither written nor read since ``unused_before_ns``, then the
    result files no pack points at (written before ``now_ns``: a store under way writes
    its result file before its pack), and leftover temporary files (module docstring)."""
    removed = {"entries": 0, "results": 0, "bytes": 0}
    used = used_since(store.uses, unused_before_ns)
    referenced: set[bytes] = set()
    try:
        prefixes = [e.name for e in os.scandir(store.packs) if e.is_dir()]
    except OSError:
        prefixes = []
    for prefix in prefixes:
        folder = os.path.join(store.packs, prefix)
        for path in _files_in(folder):
            if os.path.basename(path).startswith(".") and _mtime(path) < unused_before_ns:
                remove(path)                # the temporary file of a killed prune
        for name in segment_files(folder):
            referenced.update(_prune_segment(os.path.join(folder, name), unused_before_ns,
                                             used.get(prefix, set()), removed))
    for path in _files_in(store.uses):
        if _mtime(path) < unused_before_ns:
            remove(path)
    for path, stat in _result_files(store.results):
        name = os.path.basename(path)
        if stat.st_mtime_ns >= now_ns:
            continue
        if name.startswith("."):
            remove(path)
            continue
        try:
            digest = bytes.fromhex(os.path.basename(os.path.dirname(path)) + name)
        except ValueError:
            continue
        if digest not in referenced and remove(path):
            removed["results"] += 1
            removed["bytes"] += stat.st_size
    return removed


def _prune_segment(path: str, unused_before_ns: int, used: set[Key],
                   removed: dict[str, int]) -> list[bytes]:
    """Prune one segment; the result digests it keeps."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return []
    refs: list[bytes] = []
    kept: list[bytes] = []
    changed, end = False, 0
    for offset, length, pack in parse_segment(data):
        end = offset + length
        if pack is None:
            changed = True                  # damaged: dropped
            continue
        if pack.written_ns >= unused_before_ns:
            refs += pack.refs()
            kept.append(data[offset:end])
            continue
        try:
            keys = pack.keys()
        except Exception:  # noqa: BLE001 - unreadable keys: nothing to keep
            changed = True
            continue
        positions = [k for k, key in enumerate(keys) if key in used]
        removed["entries"] += len(keys) - len(positions)
        if len(positions) == len(keys):
            refs += pack.refs()
            kept.append(data[offset:end])
        else:
            changed = True
            if positions:
                kept.append(_part_of(pack, keys, positions, refs))
    if end < len(data) and _mtime(path) < unused_before_ns:
        changed = True                      # a pack cut short long ago (a killed writer)
    if not changed:
        return refs
    if kept:
        write_atomic(os.path.join(os.path.dirname(path), new_segment_name()), b"".join(kept))
    remove(path)
    return refs


def _part_of(pack: Pack, keys: list[Key], positions: list[int], refs: list[bytes]
             ) -> bytes:
    """A pack of some entries of ``pack``, as old as it (refs: the result files kept)."""
    try:
        values = pack.values()
    except Exception:  # noqa: BLE001 - unreadable values: nothing of it can be read
        return b""
    kept = [values[k] for k in positions]
    digests = [v.digest for v in kept if type(v) is Stored]
    refs += digests
    return encode_pack([keys[k] for k in positions],
                       pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL), digests,
                       pack.written_ns)


def _records(data: bytes) -> Iterator[tuple[int, bytes, list[Key]]]:
    """The whole records of a uses log (a torn last record, a killed writer's, ends it)."""
    offset = 0
    while offset + _USE_HEAD.size <= len(data):
        length, stamp, prefix, count = _USE_HEAD.unpack_from(data, offset)
        end = offset + length
        if length < _USE_HEAD.size + 4 or end > len(data):
            return
        if zlib.crc32(data[offset:end - 4]) != struct.unpack_from("<I", data, end - 4)[0]:
            return
        try:
            keys = decode_keys(data[offset + _USE_HEAD.size:end - 4], count)
        except Exception:  # noqa: BLE001 - a damaged record: no keys
            keys = []
        yield stamp, prefix, keys
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
        path = os.path.join(self.folder, f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
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
