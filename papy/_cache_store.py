"""The files of a cache directory: packs of entries, result files; reading and storing.

    root/
      papy-cache                  marker: what wrote this directory ({"format": N})
      packs/<prefix>/*.seg        the entries: one segment per process, one pack per
                                  batch appended to it (papy._cache_packs;
                                  each process's index of them: papy._cache_index)
      results/12/3456...          one file per result larger than INLINE_LIMIT, named by
                                  the digest of its pickle: stored once, however many
                                  entries point at it
      uses/<host>-<pid>-<token>   what each process read, for prune (papy._cache_prune)
      stats/<cache id>/...        counters (papy._cache_stats)
      files/...                   file_refs' checksum records (papy._fileref)

Every file appears whole to its readers: a result file or a marker is written to a
temporary name in its final folder and renamed (``write_atomic``; two writers of one file
leave one of the two, whole); a pack is appended with one write to its own process's
segment, and readers take only whole, checked packs. A process killed while writing leaves
a temporary file (its name starts with a dot) or a pack cut short, which readers skip and
``prune`` / ``clear`` remove.

A batch's results are pickled together (one ``pickle.dumps`` of the list: a tenth of the
cost of one per result); when they are large on average, or one cannot be pickled, they
are pickled one by one: a result larger than INLINE_LIMIT goes to its result file, one
that cannot be pickled is left out (``Saved.unpicklable``).
"""
from __future__ import annotations

import array
import copy
import errno
import hashlib
import json
import logging
import os
import pickle
import shutil
from typing import Any

from ._cache_files import remove, write_atomic
from ._cache_index import MAX_PER_PACK, POSITION_BITS, PrefixIndex, forget_indexes, index_of
from ._cache_packs import Stored, encode_pack
from ._cache_prune import note_uses, prune
from ._cache_run import DEFERRING, PENDING
from ._keys import RAW_SCALARS, Key

__all__ = ["FORMAT", "INLINE_LIMIT", "FULL_DISK", "MISSING", "Saved", "Store"]

log = logging.getLogger(__name__)

FORMAT = 2
INLINE_LIMIT = 1024
_MARKER = "papy-cache"
_DIGEST = 20

FULL_DISK = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                       errno.EACCES, errno.EPERM})


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: what ``Store.fetch`` gives for an entry it cannot read (compared with ``is``)
MISSING: Any = _Missing()


def digest_of(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST).digest()


def _copy(value: Any) -> Any:
    """A copy of a stored result (MISSING when it cannot be copied: a miss)."""
    try:
        return copy.deepcopy(value)
    except Exception as exc:  # noqa: BLE001 - an object that refuses to be copied
        log.debug("a cached result of type %s cannot be copied: %r", type(value).__name__, exc)
        return MISSING


class Saved:
    """What ``Store.save`` did: result bytes written (a result file already there costs
    none) and the positions whose results could not be pickled ({position: exception})."""

    __slots__ = ("written", "unpicklable")

    def __init__(self, written: int, unpicklable: dict[int, Exception]):
        self.written, self.unpicklable = written, unpicklable


_NONE: dict[int, Exception] = {}
_POSITIONS = (1 << POSITION_BITS) - 1


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
    def fetch(self, index: PrefixIndex, keys: list[Key], locations: list[int]
              ) -> list[Any]:
        """The results of ``keys`` at ``locations`` (``index.find``; MISSING where a pack or
        a result file cannot be read here: a miss, and the entry leaves the index). The
        results are new objects, nobody else's (immutable ones may be shared)."""
        results = [MISSING] * len(locations)
        by_pack: dict[int, list[int]] = {}
        for position, location in enumerate(locations):
            by_pack.setdefault(location >> POSITION_BITS, []).append(position)
        for pack, positions in by_pack.items():
            try:
                values: list[Any] | None = index.values_of(pack)
            except Exception as exc:  # noqa: BLE001 - unreadable, damaged, another version's
                log.debug("a cache pack in %s cannot be read here: %r", index.folder, exc)
                values = None
            for position in positions:
                location = locations[position]
                value = MISSING if values is None else values[location & _POSITIONS]
                kind = type(value)
                if kind is Stored:
                    value = self._load_result(value)
                elif value is not MISSING and kind not in RAW_SCALARS and not (
                        kind is tuple and RAW_SCALARS.issuperset(map(type, value))):
                    value = _copy(value)            # the decoded pack keeps the original
                if value is MISSING:
                    index.forget(keys[position], location)
                results[position] = value
        if DEFERRING.on:
            PENDING.add_uses(self.uses, index.prefix, keys)
        else:
            note_uses(self.uses, index.prefix, keys)
        return results

    def _load_result(self, stored: Stored) -> Any:
        path = self.result_path(stored.digest)
        try:
            with open(path, "rb") as handle:
                payload = handle.read()
        except OSError:
            return MISSING
        if len(payload) != stored.size or digest_of(payload) != stored.digest:
            log.debug("cache result %s is truncated or corrupt: removed", path)
            remove(path)
            return MISSING
        try:
            return pickle.loads(payload)
        except Exception as exc:  # noqa: BLE001 - another version's classes
            log.debug("cache result %s cannot be unpickled here: %r", path, exc)
            return MISSING

    # -- write -------------------------------------------------------------------------
    def save(self, index: PrefixIndex, keys: list[Key], values: list[Any],
             ints: array.array[int] | None = None) -> Saved:
        """Store ``values`` under ``keys`` in one pack (several past MAX_PER_PACK entries;
        ``ints``: the keys packed as int64, papy._cache_packs.encode_keys); raises
        OSError. A result that cannot be pickled is left out (``Saved``)."""
        if len(keys) <= MAX_PER_PACK:
            return self._save_part(index, keys, values, ints)
        written, unpicklable = 0, {}
        for start in range(0, len(keys), MAX_PER_PACK):
            part = self._save_part(index, keys[start:start + MAX_PER_PACK],
                                   values[start:start + MAX_PER_PACK],
                                   None if ints is None else ints[start:start + MAX_PER_PACK])
            written += part.written
            unpicklable.update({start + k: exc for k, exc in part.unpicklable.items()})
        return Saved(written, unpicklable)

    def _save_part(self, index: PrefixIndex, keys: list[Key], values: list[Any],
                   ints: array.array[int] | None = None) -> Saved:
        try:
            blob: bytes | None = pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - found item by item below
            blob = None
        if blob is not None and len(blob) <= INLINE_LIMIT * len(values):
            index.append(encode_pack(keys, blob, [], ints=ints), keys)
            return Saved(len(blob), _NONE)
        refs: list[bytes] = []
        unpicklable: dict[int, Exception] = {}
        written, kept_keys, kept = 0, [], []       # large or unpicklable results: one by one
        for position, (key, value) in enumerate(zip(keys, values, strict=True)):
            try:
                payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001 - whatever pickle refuses
                unpicklable[position] = exc
                continue
            if len(payload) > INLINE_LIMIT:
                stored, new = self._save_result(payload)
                written += new
                refs.append(stored.digest)
                value = stored
            else:
                written += len(payload)
            kept_keys.append(key)
            kept.append(value)
        if kept_keys:
            blob = pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL)
            index.append(encode_pack(kept_keys, blob, refs, ints=ints), kept_keys)
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

    # -- maintenance -------------------------------------------------------------------
    def prune(self, unused_before_ns: int, now_ns: int) -> dict[str, int]:
        """papy._cache_prune.prune on this directory."""
        forget_indexes(self.packs)          # this process appends to new segments after
        return prune(self, unused_before_ns, now_ns)

    def clear(self) -> None:
        """Remove every entry, result and use record (the statistics stay)."""
        forget_indexes(self.packs)
        for folder in (self.packs, self.results, self.uses):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            for folder in (self.packs, self.results, self.uses):
                os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            log.debug("cannot recreate %s: %s", self.root, exc)
