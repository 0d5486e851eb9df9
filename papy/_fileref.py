"""FileRef: a path whose cache key is its file's content, and file_refs(paths).

``file_refs(paths)`` yields one ``FileRef`` per path: a ``str`` (the path, so the next
Worker opens it as usual) that also carries the checksum of the file's content. In a
cache key a FileRef counts by that checksum only (``__cache_key__``), so:

- a file touched but unchanged: same checksum, a hit;
- a file changed: another checksum, a miss;
- a file moved or copied with unchanged content: same checksum, a hit.

The checksum is computed again only when the file's size or mtime differ from what was
recorded for its path last time (pypipegraph's ``FileChecksumInvariant``): records live in
the *memo* folder, one small JSON file per path, written atomically. A file modified
within the last two seconds when it was hashed is hashed again next time whatever its
mtime (it may change again within the file system's timestamp resolution: git's "racily
clean" rule).

    file_refs(paths, memo)
      path --stat--> size, mtime --record matches?--yes--> checksum from the record
                                         | no
                                         v
                                   hash the file (blake2b) -> new record (atomic write)
      --> FileRef(path, checksum, size, mtime_ns)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any, Self

from ._cache_files import write_atomic

__all__ = ["FileRef", "default_memo", "file_refs"]

log = logging.getLogger(__name__)

RACY_NS = 2_000_000_000         # a file younger than this when hashed is hashed again
_CHUNK = 1 << 20


class FileRef(str):
    """A path (a ``str``) with its file's content checksum; its cache key is the checksum.

    Example::

        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> path = os.path.join(folder, 'a.txt')
        >>> with open(path, 'w') as handle:
        ...     _ = handle.write('hello')
        >>> [ref] = file_refs([path], memo=folder)
        >>> ref == path, open(ref).read(), len(ref.checksum)
        (True, 'hello', 40)
    """

    checksum: str
    size: int
    mtime_ns: int

    def __new__(cls, path: str, checksum: str, size: int, mtime_ns: int) -> Self:
        self = super().__new__(cls, path)
        self.checksum, self.size, self.mtime_ns = checksum, size, mtime_ns
        return self

    @property
    def path(self) -> str:
        return str(self)

    def __cache_key__(self) -> str:
        return self.checksum

    def __reduce__(self) -> tuple[Any, ...]:
        return (FileRef, (str(self), self.checksum, self.size, self.mtime_ns))

    def __repr__(self) -> str:
        return f"FileRef({str(self)!r}, checksum={self.checksum[:12]!r}...)"


def default_memo() -> str:
    """``$PAPY_CHECKSUMS``, else ``$XDG_CACHE_HOME/papy/checksums``, else
    ``~/.cache/papy/checksums``."""
    explicit = os.environ.get("PAPY_CHECKSUMS")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "papy", "checksums")


def file_refs(paths: Iterable[str | os.PathLike[str]], memo: Any = None) -> Iterator[FileRef]:
    """Yield a ``FileRef`` for each path, in order (the module docstring says when a file
    is hashed). ``memo``: where the records of sizes, mtimes and checksums are kept: a
    folder, a ``papy.Cache`` (its ``files`` folder), or None (``default_memo()``).

    A missing or unreadable file raises OSError when its turn comes. Give a list of paths,
    not one path (``file_refs(glob.glob('data/*.csv'))``).
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(f"file_refs takes an iterable of paths, not one path: {paths!r} "
                        f"(write file_refs([{paths!r}]))")
    return _refs(paths, _memo_folder(memo))


def _refs(paths: Iterable[str | os.PathLike[str]], folder: str) -> Iterator[FileRef]:
    for path in paths:
        yield checksum_ref(os.fspath(path), folder)


def _memo_folder(memo: Any) -> str:
    from ._cache import Cache
    if memo is None:
        return default_memo()
    if isinstance(memo, Cache):
        return os.path.join(memo.root, "files")
    return str(os.fspath(memo))


def checksum_ref(path: str, memo_folder: str) -> FileRef:
    """The FileRef of one path, hashing the file only when its record is out of date."""
    absolute = os.path.abspath(path)
    stat = os.stat(absolute)
    record_path = os.path.join(memo_folder, hashlib.blake2b(
        absolute.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest())
    record = _load_record(record_path)
    if record is not None and record.get("path") == absolute and record.get("trusted") \
            and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns \
            and isinstance(record.get("checksum"), str):
        return FileRef(path, record["checksum"], stat.st_size, stat.st_mtime_ns)
    checksum, stat = hash_file(absolute)
    trusted = time.time_ns() - stat.st_mtime_ns > RACY_NS
    try:
        write_atomic(record_path, json.dumps(
            {"path": absolute, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
             "checksum": checksum, "trusted": trusted}).encode())
    except OSError as exc:
        log.debug("cannot record the checksum of %s in %s: %s", absolute, memo_folder, exc)
    return FileRef(path, checksum, stat.st_size, stat.st_mtime_ns)


def hash_file(path: str) -> tuple[str, os.stat_result]:
    """The file's blake2b-160 hex digest, and its stat taken on the handle that was read
    (so the record describes the content hashed)."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest(), stat


def _load_record(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            loaded = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None
