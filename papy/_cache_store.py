"""The files of a cache directory: entries, results, atomic writes, pruning.

    root/
      papy-cache                  marker: what wrote this directory ({"format": N})
      entries/ab/cdef...          one small file per key (40 hex digits: ab + cdef...)
      results/12/3456...          one file per result larger than INLINE_LIMIT, named by
                                  the digest of its bytes: stored once, however many keys
                                  point at it
      stats/<cache id>/...        counters (papy._cache_stats)

Every file is written to a temporary name in its final folder, then renamed over the final
name (``os.replace``, atomic on one file system, NFS included): a reader sees the old file
or the new one, never a part; two writers of one entry leave one of the two, whole. A
process killed while writing leaves a temporary file (``.name.<token>``), which readers
never open and ``prune``/``clear`` remove.

An entry (binary)::

    b"PAPYCACHE" | format (1 byte) | kind (b"I" inline, b"R" reference) | key (20 bytes)
    | body | blake2b-16 of all the bytes before it

with ``body`` the pickled result (kind I, at most INLINE_LIMIT bytes: a small result is
cheaper to keep in its entry than behind a pointer as long as it) or the result file's
digest (20 bytes) and size (8 bytes) (kind R). A reader checks the length, the magic, the
format, the key and the checksum of an entry, and the size and digest of a result file:
anything else (a truncated or corrupt file, another format) is a miss, and a corrupt
result file is removed so that the next store writes it again.
"""
from __future__ import annotations

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
from collections.abc import Iterator
from typing import Any

__all__ = ["FORMAT", "INLINE_LIMIT", "Store", "write_atomic"]

log = logging.getLogger(__name__)

FORMAT = 1
INLINE_LIMIT = 1024
MAGIC = b"PAPYCACHE"
_KEY_SIZE = 20
_CHECK_SIZE = 16
_HEAD = len(MAGIC) + 2 + _KEY_SIZE
_REFERENCE = struct.Struct("<20sQ")
_MARKER = "papy-cache"
_temp_counter = itertools.count()
_HOST = socket.gethostname().replace("/", "_") or "host"


class Miss(Exception):
    """An entry that is absent, unreadable or invalid: the caller computes the result."""


def _temp_name(path: str) -> str:
    folder, name = os.path.split(path)
    token = f"{_HOST}-{os.getpid()}-{threading.get_ident()}-{next(_temp_counter)}"
    return os.path.join(folder, f".{name}.{token}")


def is_temporary(name: str) -> bool:
    return name.startswith(".")


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (creating the
    folder if needed). Raises OSError (a full disk: ENOSPC, EDQUOT, EFBIG)."""
    temp = _temp_name(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
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


def _read(path: str) -> tuple[bytes, os.stat_result]:
    fd = os.open(path, os.O_RDONLY)
    try:
        stat = os.fstat(fd)
        chunks, left = [], stat.st_size + 1       # +1: see the end of a file that grew
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), stat
    finally:
        os.close(fd)


def digest_of(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_KEY_SIZE).digest()


class Store:
    """The entries and results under ``root`` (module docstring)."""

    def __init__(self, root: str):
        self.root = root
        self.entries = os.path.join(root, "entries")
        self.results = os.path.join(root, "results")

    def make(self) -> None:
        """Create the folders and the marker (OSError when the directory is unusable)."""
        os.makedirs(self.entries, exist_ok=True)
        os.makedirs(self.results, exist_ok=True)
        marker = os.path.join(self.root, _MARKER)
        if not os.path.exists(marker):
            write_atomic(marker, json.dumps({"format": FORMAT, "by": "papy"}).encode())

    def entry_path(self, key: bytes) -> str:
        text = key.hex()
        return os.path.join(self.entries, text[:2], text[2:])

    def result_path(self, digest: bytes) -> str:
        text = digest.hex()
        return os.path.join(self.results, text[:2], text[2:])

    # -- read ------------------------------------------------------------------------
    def load(self, key: bytes, touch_before_ns: int) -> Any:
        """The result stored under ``key``; raises Miss. An entry last used before
        ``touch_before_ns`` (a file-system time) is touched: ``prune`` keeps it."""
        path = self.entry_path(key)
        try:
            data, stat = _read(path)
        except FileNotFoundError:
            raise Miss() from None
        except OSError as exc:
            log.debug("cache entry %s unreadable: %s", path, exc)
            raise Miss() from None
        payload = self._payload(path, key, data)
        try:
            value = pickle.loads(payload)
        except Exception as exc:  # noqa: BLE001 - another version's classes, a corrupt pickle
            log.debug("cache entry %s cannot be unpickled here: %r", path, exc)
            raise Miss() from None
        if stat.st_mtime_ns < touch_before_ns:
            try:
                os.utime(path)
            except OSError as exc:
                log.debug("cannot touch %s: %s", path, exc)
        return value

    def _payload(self, path: str, key: bytes, data: bytes) -> bytes:
        if len(data) < _HEAD + _CHECK_SIZE or not data.startswith(MAGIC) \
                or data[len(MAGIC)] != FORMAT or data[_HEAD - _KEY_SIZE:_HEAD] != key \
                or hashlib.blake2b(data[:-_CHECK_SIZE], digest_size=_CHECK_SIZE).digest() \
                != data[-_CHECK_SIZE:]:
            log.debug("cache entry %s is truncated, corrupt or of another format", path)
            raise Miss()
        kind, body = data[len(MAGIC) + 1:len(MAGIC) + 2], data[_HEAD:-_CHECK_SIZE]
        if kind == b"I":
            return body
        if kind != b"R" or len(body) != _REFERENCE.size:
            raise Miss()
        digest, size = _REFERENCE.unpack(body)
        result = self.result_path(digest)
        try:
            payload, _ = _read(result)
        except OSError:
            raise Miss() from None
        if len(payload) != size or digest_of(payload) != digest:
            log.debug("cache result %s is truncated or corrupt: removed", result)
            _remove(result)
            raise Miss()
        return payload

    # -- write -----------------------------------------------------------------------
    def save(self, key: bytes, payload: bytes) -> int:
        """Store ``payload`` (a pickle) under ``key``; the bytes of result data written
        (0 when the result file was there already). Raises OSError."""
        written = len(payload)
        if written <= INLINE_LIMIT:
            body, kind = payload, b"I"
        else:
            digest = digest_of(payload)
            result = self.result_path(digest)
            try:
                present = os.stat(result).st_size == written
            except OSError:
                present = False
            if present:
                written = 0
            else:
                write_atomic(result, payload)
            body, kind = _REFERENCE.pack(digest, len(payload)), b"R"
        head = MAGIC + bytes((FORMAT,)) + kind + key
        check = hashlib.blake2b(head + body, digest_size=_CHECK_SIZE).digest()
        write_atomic(self.entry_path(key), head + body + check)
        return written

    # -- maintenance -----------------------------------------------------------------
    def prune(self, unused_before_ns: int, written_before_ns: int) -> dict[str, int]:
        """Remove the entries not written or read since ``unused_before_ns``, then the
        result files no entry points at (written before ``written_before_ns``: a store
        under way writes its result file before its entry), and stale temporary files."""
        removed = {"entries": 0, "results": 0, "bytes": 0}
        referenced: set[bytes] = set()
        for path, stat in _files(self.entries):
            temporary = is_temporary(os.path.basename(path))
            if stat.st_mtime_ns < unused_before_ns:
                if _remove(path) and not temporary:
                    removed["entries"] += 1
                continue
            if temporary:       # a write under way
                continue
            try:
                data, _ = _read(path)
            except OSError:
                continue
            if data[len(MAGIC) + 1:len(MAGIC) + 2] == b"R" \
                    and len(data) == _HEAD + _REFERENCE.size + _CHECK_SIZE:
                referenced.add(_REFERENCE.unpack(data[_HEAD:-_CHECK_SIZE])[0])
        for path, stat in _files(self.results):
            name = os.path.basename(path)
            if stat.st_mtime_ns >= written_before_ns:
                continue
            if is_temporary(name):
                _remove(path)
                continue
            try:
                digest = bytes.fromhex(os.path.basename(os.path.dirname(path)) + name)
            except ValueError:
                continue
            if digest not in referenced and _remove(path):
                removed["results"] += 1
                removed["bytes"] += stat.st_size
        return removed

    def clear(self) -> None:
        """Remove every entry and result (the statistics stay)."""
        for folder in (self.entries, self.results):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.makedirs(self.entries, exist_ok=True)
            os.makedirs(self.results, exist_ok=True)
        except OSError as exc:
            log.debug("cannot recreate %s: %s", self.root, exc)


def _files(folder: str) -> Iterator[tuple[str, os.stat_result]]:
    """The files one level of fan-out below ``folder``, with their stat."""
    try:
        fans = list(os.scandir(folder))
    except OSError:
        return
    for fan in fans:
        if not fan.is_dir(follow_symlinks=False):
            continue
        try:
            entries = list(os.scandir(fan.path))
        except OSError:
            continue
        for entry in entries:
            try:
                yield entry.path, entry.stat(follow_symlinks=False)
            except OSError:
                continue


FULL_DISK = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                       errno.EACCES, errno.EPERM})
