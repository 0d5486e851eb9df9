"""The content key of a value: equal values give equal keys, in every process and run.

``content_digest(value)`` hashes a canonical encoding of ``value`` (not its pickle, which
depends on insertion order, on the memo and on the hash seed):

- ``None``, bools, ints, floats, complex numbers, strs, bytes: their type and value
  (``1``, ``1.0`` and ``True`` differ);
- lists and tuples: their items in order; dicts: their items sorted by the items' keys;
  sets and frozensets: their items sorted;
- an object with a ``__cache_key__()`` method: its type and what that method returns (a
  ``FileRef`` gives its file's checksum: papy.workers.io);
- a NumPy-like array (``dtype``, ``shape``, ``tobytes``): dtype, shape and bytes;
- functions and classes: their qualified names;
- any other object: what ``__reduce_ex__(4)`` gives (the picklable state), encoded by
  these rules: a dataclass or a plain object by its class and attributes.

What cannot be encoded (a lock, an open file, a cycle) raises ``UnkeyableError``.

``inbox_key(inbox)`` is what a cache entry is looked up by: for the common inboxes (one
item, or a join's items, of the plain types below) an int item itself, or the item's
``repr``, which is canonical for those types and costs a tenth of a digest
(papy._cache_batch computes them for a whole batch in C: ``map(repr, items)``); for
anything else, a tagged digest.
"""
from __future__ import annotations

import copyreg
import hashlib
import inspect
import struct
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["UnkeyableError", "call_arguments", "content_digest", "inbox_key", "RAW_SCALARS",
           "RAW_LIMIT", "INT_KEYS", "Key"]

DIGEST_SIZE = 20
_MAX_DEPTH = 200
_NEWOBJ = vars(copyreg)["__newobj__"]      # what object.__reduce_ex__ names the class with
_SCALARS: frozenset[type] = frozenset({int, float, str, bytes, bool, type(None), complex})
#: exact types whose repr is canonical, distinct between types (``1``, ``1.0``, ``True``,
#: ``'1'``, ``b'1'``) and free of line breaks: such items are keyed by their repr
RAW_SCALARS = _SCALARS
#: a repr longer than this is keyed by its digest instead (the index holds keys in memory)
RAW_LIMIT = 96
#: the ints keyed by themselves: those of 64 bits (a pack stores them as int64)
INT_KEYS = (-(1 << 63), 1 << 63)
#: what an item is found by in a cache's index (papy._cache_index)
Key = int | str | bytes


class UnkeyableError(TypeError):
    """A value that has no content key (it cannot be encoded canonically)."""


def content_digest(value: Any) -> bytes:
    """The 20-byte digest of ``value``'s canonical encoding (module docstring).

    Example::

        >>> content_digest({'a': 1, 'b': {2, 3}}) == content_digest({'b': {3, 2}, 'a': 1})
        True
        >>> content_digest(1) == content_digest(1.0)
        False
    """
    parts: list[bytes] = []
    _Encoder(parts).encode(value, 0)
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for part in parts:
        digest.update(part)
    return digest.digest()


class _Encoder:
    __slots__ = ("out", "path")

    def __init__(self, out: list[bytes]):
        self.out = out
        self.path: set[int] = set()      # ids of the containers being encoded: cycles

    def encode(self, value: Any, depth: int) -> None:
        kind = type(value)
        out = self.out
        if kind is str:
            data = value.encode("utf-8", "surrogatepass")
            out.append(b"s%d:" % len(data))
            out.append(data)
        elif kind is int:
            out.append(b"i%d;" % value)
        elif kind is bytes:
            out.append(b"b%d:" % len(value))
            out.append(value)
        elif kind is float:
            out.append(b"f" + struct.pack("<d", value))
        elif value is None:
            out.append(b"N")
        elif kind is bool:
            out.append(b"T" if value else b"F")
        elif kind is list or kind is tuple:
            self._sequence(value, b"l" if kind is list else b"t", depth)
        elif kind is dict:
            self._mapping(value, b"d", depth)
        else:
            self._other(value, kind, depth)

    def _sequence(self, value: list[Any] | tuple[Any, ...], tag: bytes, depth: int) -> None:
        if _SCALARS.issuperset(map(type, value)):      # repr is canonical for these: in C
            data = repr(value).encode("utf-8", "surrogatepass")
            self.out.append(tag + b"r%d:" % len(data))
            self.out.append(data)
            return
        self._enter(value, depth)
        self.out.append(tag + b"%d[" % len(value))
        for item in value:
            self.encode(item, depth + 1)
        self.out.append(b"]")
        self.path.discard(id(value))

    def _mapping(self, value: Mapping[Any, Any], tag: bytes, depth: int) -> None:
        self._enter(value, depth)
        items = sorted((self._bytes_of(k, depth), self._bytes_of(v, depth))
                       for k, v in value.items())
        self.out.append(tag + b"%d{" % len(items))
        for key, item in items:
            self.out.append(key)
            self.out.append(item)
        self.out.append(b"}")
        self.path.discard(id(value))

    def _unordered(self, value: Iterable[Any], tag: bytes, depth: int) -> None:
        self._enter(value, depth)
        items = sorted(self._bytes_of(v, depth) for v in value)
        self.out.append(tag + b"%d{" % len(items))
        self.out.extend(items)
        self.out.append(b"}")
        self.path.discard(id(value))

    def _bytes_of(self, value: Any, depth: int) -> bytes:
        parts: list[bytes] = []
        inner = _Encoder(parts)
        inner.path = self.path
        inner.encode(value, depth + 1)
        return b"".join(parts)

    def _enter(self, value: Any, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise UnkeyableError(f"a value nested more than {_MAX_DEPTH} levels deep has no "
                                 f"content key")
        if id(value) in self.path:
            raise UnkeyableError(f"a value that contains itself has no content key: "
                                 f"{type(value).__name__}")
        self.path.add(id(value))

    def _other(self, value: Any, kind: type, depth: int) -> None:
        out = self.out
        custom = getattr(kind, "__cache_key__", None)
        if custom is not None:
            out.append(b"k" + _name(kind))
            self._enter(value, depth)
            self.encode(custom(value), depth + 1)
            self.path.discard(id(value))
        elif isinstance(value, (set, frozenset)):
            self._unordered(value, b"S" if isinstance(value, set) else b"Z", depth)
            if kind not in (set, frozenset):
                out.append(_name(kind))
        elif kind is complex:
            out.append(b"c" + struct.pack("<dd", value.real, value.imag))
        elif isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type)):
            out.append(b"R" + _name(value))
        elif hasattr(value, "dtype") and hasattr(value, "shape") and hasattr(value, "tobytes"):
            data = value.tobytes()
            out.append(b"A" + _name(kind) + str(value.dtype).encode() +
                       repr(tuple(value.shape)).encode() + b"%d:" % len(data))
            out.append(data)
        else:
            self._reduced(value, kind, depth)

    def _reduced(self, value: Any, kind: type, depth: int) -> None:
        try:
            reduced = value.__reduce_ex__(4)
        except Exception as exc:  # noqa: BLE001 - whatever refuses to pickle has no key
            raise UnkeyableError(f"{kind.__module__}.{kind.__qualname__} has no content key "
                                 f"({type(exc).__name__}: {exc}); give it a __cache_key__() "
                                 f"method, or a key= to the Cache") from None
        if isinstance(reduced, str):        # a global, pickled by reference
            self.out.append(b"G" + _name(kind) + reduced.encode())
            return
        self._enter(value, depth)
        constructor, arguments, *rest = tuple(reduced) + (None,) * 3
        self.out.append(b"O" + _name(kind))
        if constructor is _NEWOBJ and arguments and arguments[0] is kind:
            arguments = arguments[1:]       # the class is written already
        elif constructor is not None:
            self.out.append(_name(constructor))
        self.encode(tuple(arguments or ()), depth + 1)
        state, list_items, dict_items = rest[0], rest[1], rest[2]
        self.encode(state, depth + 1)
        if list_items is not None:
            self.encode(list(list_items), depth + 1)
        if dict_items is not None:
            self.encode(dict(dict_items), depth + 1)
        self.path.discard(id(value))


def _name(obj: Any) -> bytes:
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    text = f"{module}.{name};"
    return text.encode("utf-8", "surrogatepass")


def call_arguments(func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any],
                   ignore: frozenset[str]) -> tuple[Any, ...]:
    """The arguments of a call of ``func`` as the key sees them: bound to the parameter
    names (so ``f(1, n=2)`` and ``f(1, 2)`` agree), defaults filled in, the names in
    ``ignore`` left out however they were passed: ``((name, value), ...)``. A function
    without a signature (some builtins): the positional arguments named ``'0'``, ``'1'``,
    ..., then the keywords sorted, ignored keywords left out."""
    try:
        signature = inspect.signature(func)
        bound = signature.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return tuple((str(k), v) for k, v in enumerate(args)) + \
            tuple(sorted((k, v) for k, v in kwargs.items() if k not in ignore))
    bound.apply_defaults()
    kept = []
    for name, value in bound.arguments.items():
        if name in ignore:
            continue
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            value = {k: v for k, v in value.items() if k not in ignore}
        kept.append((name, value))
    return tuple(kept)


def inbox_key(inbox: Any) -> Key:
    """The key of a Worker's inbox in its cache entry's index (module docstring).

    - ``[x]`` with ``x`` an ``int`` (exactly: not a bool) of 64 bits: ``x`` itself (no
      repr to make; a pack stores such keys as an array of int64);
    - ``[x]`` with ``x`` of a RAW_SCALARS type, or a tuple of them: ``repr(x)``;
    - a list of several RAW_SCALARS items (a join): ``repr(inbox)`` (it starts with ``[``,
      which no key of the first kind does);
    - a repr longer than RAW_LIMIT: ``b"r"`` + its 20-byte digest;
    - anything else: ``b"c"`` + ``content_digest(inbox)`` (UnkeyableError).

    An int key, a str key and a bytes key never compare equal, so the kinds cannot collide
    (``1.0`` and ``True`` are keyed by their reprs: they do not meet the int ``1``).

    Example::

        >>> inbox_key([12]), inbox_key([12.0]), inbox_key([1, 'a']), inbox_key([(1, 2)])
        (12, '12.0', "[1, 'a']", '(1, 2)')
        >>> inbox_key([{'a': 1}])[:1]
        b'c'
    """
    text: str | None = None
    if type(inbox) is list:
        if len(inbox) == 1:
            item = inbox[0]
            kind = type(item)
            if kind is int and INT_KEYS[0] <= item < INT_KEYS[1]:
                return item  # type: ignore[no-any-return]  # an int (kind is int)
            if kind in _SCALARS or (kind is tuple and _SCALARS.issuperset(map(type, item))):
                text = repr(item)
        elif inbox and _SCALARS.issuperset(map(type, inbox)):
            text = repr(inbox)
    if text is None:
        return b"c" + content_digest(inbox)
    if len(text) > RAW_LIMIT:
        return long_key(text)
    return text


def long_key(text: str) -> bytes:
    """The key of an inbox whose repr is longer than RAW_LIMIT."""
    return b"r" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                                  digest_size=DIGEST_SIZE).digest()
