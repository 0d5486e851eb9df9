"""What papy.workers.transfer moves: the descriptor, its errors, and the item's encoding.

An item becomes a payload (:func:`encode`) that a place holds (a file, a segment, a FIFO, a
socket: see _transfer_local.py and _transfer_tcp.py); the loader gets the payload back and
:func:`decode` makes the item again. Only the :class:`ItemRef` travels the pipeline.
"""
from __future__ import annotations

import pickle
import time
from typing import Any, NamedTuple

__all__ = ["ItemRef", "TransferError", "Payload", "KINDS", "SHM_PREFIX", "DEFAULT_TIMEOUT",
           "LOAD_TIMEOUT", "CHUNK", "encode", "decode", "as_ref", "gone", "path_of",
           "address_of"]

KINDS = ("file", "fifo", "tcp", "shm")
SHM_PREFIX = "/papy_"          #: every segment is /papy_<pid>_<random>
DEFAULT_TIMEOUT = 300.0        #: seconds an item waits for its loader
LOAD_TIMEOUT = 60.0            #: seconds a fifo/tcp loader waits for the next bytes
CHUNK = 1 << 20                #: bytes written or sent at a time

#: what a place holds: the encoded item (a bytearray item is not copied)
Payload = bytes | bytearray | memoryview


class ItemRef(NamedTuple):
    """What :func:`dump_item` returns and :func:`load_item` takes: small and picklable."""
    kind: str                        #: 'file', 'fifo', 'tcp' or 'shm'
    location: str | tuple[str, int]  #: the file or FIFO path, the segment name, (host, port)
    size: int                        #: bytes of the encoded item
    encoding: str                    #: 'bytes', 'bytearray', 'str' or 'pickle'
    expires: float | None            #: time.time() after which the item may be gone
    token: str = ""                  #: tcp: the secret a loader must present


class TransferError(OSError):
    """An item cannot be loaded: already loaded, expired, or its dumping process is gone."""


def encode(item: object) -> tuple[Payload, str]:
    """The payload of ``item`` and the name of its encoding."""
    if isinstance(item, (bytes, bytearray)):
        return item, type(item).__name__
    if isinstance(item, memoryview):
        return (item.cast("B") if item.c_contiguous else item.tobytes()), "bytes"
    if isinstance(item, str):
        return item.encode("utf-8", "surrogatepass"), "str"
    try:
        return pickle.dumps(item, 5), "pickle"
    except Exception as exc:
        raise TypeError(f"dump_item cannot pickle the item ({type(item).__name__}): {exc}; "
                        f"dump bytes, str or a picklable object") from exc


def decode(data: bytes | bytearray, encoding: str) -> Any:
    """The item again, from the payload a loader got."""
    if encoding == "bytes":
        return bytes(data)
    if encoding == "bytearray":
        return data if isinstance(data, bytearray) else bytearray(data)
    if encoding == "str":
        return data.decode("utf-8", "surrogatepass")
    return pickle.loads(data)


def as_ref(ref: object) -> ItemRef:
    """``ref`` as an ItemRef (a plain tuple of its fields is accepted), or a TypeError."""
    if isinstance(ref, tuple) and len(ref) in (5, 6) and ref[0] in KINDS:
        return ItemRef(*ref)
    raise TypeError(f"load_item takes the descriptor that dump_item returned (an ItemRef) "
                    f"as inbox[0], not {ref!r:.200}")


def path_of(ref: ItemRef) -> str:
    """The path or segment name of a file, fifo or shm item."""
    if not isinstance(ref.location, str):
        raise TypeError(f"a {ref.kind} item's location is a path or a name, "
                        f"not {ref.location!r:.200}")
    return ref.location


def address_of(ref: ItemRef) -> tuple[str, int]:
    """The (host, port) of a tcp item (a list, as JSON would give it, is accepted)."""
    location: object = ref.location
    if isinstance(location, (tuple, list)) and len(location) == 2:
        host, port = location
        if isinstance(host, str) and isinstance(port, int):
            return host, port
    raise TypeError(f"a tcp item's location is (host, port), not {location!r:.200}")


def gone(ref: ItemRef, what: str) -> TransferError:
    """The error of an item that is no longer where ``ref`` says, with the likely why."""
    expired = ref.expires is not None and time.time() > ref.expires
    why = (f"it expired at {time.strftime('%H:%M:%S', time.localtime(ref.expires))} "
           f"(raise dump_item's timeout)" if expired else
           "it was loaded already (load an item once, or pass remove=False for file and "
           "shm items), or the process that dumped it has exited")
    return TransferError(f"the {ref.kind} item {ref.location!r} is gone ({what}): {why}")
