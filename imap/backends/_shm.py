"""Large payloads between a process worker and its slot, through POSIX shared memory.

Pickle protocol 5 hands large buffers (bytes, bytearray, memoryview, numpy arrays) to a
``buffer_callback`` instead of copying them into the pickle. Buffers of at least
``threshold`` bytes are written into a shared-memory segment; the pickle, which stays small,
goes through the pipe with a descriptor of where each buffer lies:

    writer (one per direction per worker)          reader
    pickle(obj, buffer_callback) -> big buffers    descriptor = (segment name, spans)
    copy them into its segment (reused while       map the segment (once per name), then
    it is big enough; a bigger one gets a new      unlink the name at once: both keep
    name, the old name is unlinked)                their mappings, nothing stays in /dev/shm
                                                   pickle.loads(data, buffers=views)

A segment is reused for the next message: the sender only writes the next one after the
other side answered the previous one (one batch in flight per worker), and the reader has
copied everything out of the segment by then (bytes and bytearray copy when they are
rebuilt; other buffers such as numpy arrays get a private copy first).

Names carry a per-pool prefix ``/imap_<pid>_<n>_<worker>_``; the owner of the pool sweeps
``/dev/shm`` for its prefix when a worker is replaced or the pool stops, so a worker killed
with SIGKILL between creating a segment and its reader mapping it leaves nothing behind.
"""
from __future__ import annotations

import ctypes
import itertools
import mmap
import os
import pickle
from typing import Any, SupportsIndex

import posix_ipc

from .._evaluate import PROTOCOL

#: default threshold: buffers of at least 1 MiB travel through shared memory
DEFAULT_THRESHOLD = 1 << 20
_MIN_SEGMENT = 1 << 20
_GIL_FREE_COPY = 1 << 20
_pool_numbers = itertools.count()
#: where a message's large buffers lie: (segment name, ((offset, size, owned), ...))
Descriptor = tuple[str, tuple[tuple[int, int, bool], ...]]


def pool_prefix() -> str:
    """A prefix unique to one pool of this process."""
    return f"/imap_{os.getpid()}_{next(_pool_numbers)}_"


#: only batches this short are scanned for large buffers (scanning costs per item; large
#: payloads come in short batches anyway, since the batch size follows the time per item)
SCAN_UP_TO_ITEMS = 64
_BUFFER_TYPES = (bytes, bytearray, memoryview)


def _rebuild(kind: type[Any], buffer: Any) -> Any:
    if kind is memoryview:
        return memoryview(bytearray(buffer))
    return kind(buffer)


class _Blob:
    """Stands for a large bytes/bytearray/memoryview so it is pickled out of band (the C
    pickler writes exact bytes and bytearray objects inline, without asking anybody)."""

    __slots__ = ("kind", "data")

    def __init__(self, kind: type[Any], data: Any) -> None:
        self.kind = kind
        self.data = data

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return _rebuild, (self.kind, pickle.PickleBuffer(self.data))


def _swap_large(obj: Any, threshold: int, depth: int) -> Any:
    """Replace large buffers by _Blob, in obj and (depth) levels of lists and tuples."""
    kind = type(obj)
    if kind in _BUFFER_TYPES:
        if kind is memoryview:
            if not obj.contiguous:
                return _Blob(kind, obj.tobytes())
            return _Blob(kind, obj) if obj.nbytes >= threshold else _Blob(kind, obj.tobytes())
        return _Blob(kind, obj) if len(obj) >= threshold else obj
    if depth and (kind is list or kind is tuple):
        swapped = [_swap_large(item, threshold, depth - 1) for item in obj]
        if any(new is not old for new, old in zip(swapped, obj, strict=True)):
            return swapped if kind is list else tuple(swapped)
    return obj


def _copy_into(target: mmap.mmap, offset: int, raw: memoryview) -> None:
    """target[offset:offset + len] = raw; large bytes are copied by ctypes.memmove, which
    releases the GIL, so two slot threads write their payloads at the same time."""
    source = raw.obj
    size = raw.nbytes
    if type(source) is bytes and size == len(source) and size >= _GIL_FREE_COPY:
        destination = ctypes.c_char.from_buffer(target, offset)
        try:
            ctypes.memmove(ctypes.addressof(destination), source, size)
        finally:
            del destination            # the mmap must not stay exported
        return
    target[offset:offset + size] = raw


class Writer:
    """Pickles objects, putting large buffers into a reusable shared-memory segment."""

    def __init__(self, prefix: str, threshold: int) -> None:
        self._prefix = prefix
        self._threshold = threshold
        self._generations = itertools.count()
        self._name: str | None = None
        self._map: mmap.mmap | None = None

    def dumps(self, obj: object) -> tuple[bytes, Descriptor | None]:
        """Return ``(pickle, descriptor)``; descriptor is None when nothing went out of band."""
        buffers: list[memoryview] = []
        threshold = self._threshold

        def keep(buffer: pickle.PickleBuffer) -> bool:
            raw = buffer.raw()
            if raw.nbytes < threshold:
                return True              # small: stays inside the pickle
            buffers.append(raw)
            return False

        if type(obj) is list and len(obj) <= SCAN_UP_TO_ITEMS:
            obj = _swap_large(obj, threshold, 2)         # a batch of items
        elif (type(obj) is tuple and obj and type(obj[0]) is list
              and len(obj[0]) <= SCAN_UP_TO_ITEMS):
            obj = (_swap_large(obj[0], threshold, 2),) + obj[1:]   # a reply: (values, ...)
        data = pickle.dumps(obj, PROTOCOL, buffer_callback=keep)
        if not buffers:
            return data, None
        return data, self._store(buffers)

    def _store(self, buffers: list[memoryview]) -> Descriptor:
        needed = sum(raw.nbytes for raw in buffers)
        if self._map is None or len(self._map) < needed:
            self._grow(needed)
        target, name = self._map, self._name
        assert target is not None and name is not None     # made by _grow
        spans = []
        offset = 0
        for raw in buffers:
            size = raw.nbytes
            _copy_into(target, offset, raw)
            # bytes/bytearray/memoryview copy when rebuilt; anything else (numpy) needs its
            # own copy, or it would keep pointing into the segment that is reused
            owned = type(raw.obj) in _BUFFER_TYPES
            spans.append((offset, size, owned))
            offset += size
            raw.release()
        return name, tuple(spans)

    def _grow(self, needed: int) -> None:
        self.close()
        size = max(_MIN_SEGMENT, 1 << (needed - 1).bit_length())
        name = f"{self._prefix}{next(self._generations)}"
        segment = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=size)
        try:
            self._map = mmap.mmap(segment.fd, size)
        except BaseException:
            segment.unlink()
            raise
        finally:
            segment.close_fd()
        self._name = name

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._name is not None:
            unlink_shm(self._name)  # normally the reader unlinked it already
            self._name = None


class Reader:
    """Maps the other side's segments and unpickles with their buffers."""

    def __init__(self) -> None:
        self._name: str | None = None
        self._map: mmap.mmap | None = None

    def loads(self, data: bytes, descriptor: Descriptor | None) -> Any:
        if descriptor is None:
            return pickle.loads(data)
        name, spans = descriptor
        if name != self._name:
            self._attach(name)
        assert self._map is not None        # mapped by _attach
        views: list[memoryview | bytearray] = []
        window = memoryview(self._map)
        try:
            for offset, size, owned in spans:
                view = window[offset:offset + size]
                views.append(view if owned else bytearray(view))
            return pickle.loads(data, buffers=views)
        finally:
            for kept in views:
                if isinstance(kept, memoryview):
                    kept.release()
            window.release()

    def _attach(self, name: str) -> None:
        self.close()
        segment = posix_ipc.SharedMemory(name)
        try:
            self._map = mmap.mmap(segment.fd, segment.size)
        finally:
            segment.close_fd()
        self._name = name
        unlink_shm(name)  # both sides keep their mappings; nothing is left in /dev/shm

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self._name = None


def unlink_shm(name: str) -> None:
    """Remove a shared-memory segment that may be gone already (the one helper for imap and
    papy.workers.transfer)."""
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        pass


def sweep(prefix: str) -> None:
    """Unlink every segment whose name starts with ``prefix`` (Linux: listed in /dev/shm)."""
    stem = prefix.lstrip("/")
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return
    for entry in names:
        if entry.startswith(stem):
            unlink_shm("/" + entry)
