"""Packs: a cache's entries, one record per batch, appended to each process's segment file
(this process's index of them: papy._cache_index).

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

A segment is never rewritten in place (prune writes what it keeps to a new segment and
removes the old ones). A pack that is truncated, corrupt or of another format gives no
entries (a miss for its keys, which are computed again and stored in a new pack that
takes their place in the index).
"""
from __future__ import annotations

import array
import os
import pickle
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

from ._cache_files import HOST
from ._keys import Key

__all__ = ["PACK_FORMAT", "Pack", "Stored", "encode_keys", "decode_keys", "encode_pack",
           "parse_segment", "segment_files", "new_segment_name"]

PACK_FORMAT = 1
MAGIC = b"PAPYPACK"
SUFFIX = ".seg"
_HEADER = struct.Struct("<8sBBHIIIQQ")
_CHECK = 4
_CRC = struct.Struct("<I")
_DIGEST = 20


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


def encode_keys(keys: list[Key], ints: array.array[int] | None = None) -> bytes:
    """b"Q" and an array of int64 when the caller has the keys as one (``ints``: keys that
    are all ints of 64 bits, packed as papy._cache_batch.plain_keys checked them), b"S"
    and the keys joined by line breaks when they are all strs without one (the reprs of
    papy._keys: a tenth of the cost of a pickle), else b"P" and their pickle."""
    if ints is not None:
        return b"Q" + ints.tobytes()
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
                written_ns: int | None = None, ints: array.array[int] | None = None
                ) -> bytes:
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
    return f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"
